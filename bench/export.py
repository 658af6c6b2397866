"""The training export (issue 16.5): GET /v1/jobs/{id}/export of a job of N verdicts, as JSON Lines
and as Parquet, in a fresh process per run: its rows per second, bytes, and the process's peak RSS
beside the same process's peak RSS before the export (app and pyarrow loaded; Linux VmHWM), at two job sizes. Constant memory means the
growth does not grow with N (one keyset page of store.exports.PAGE verdicts and one Parquet row
group of judge.exports.ROW_GROUP rows are held at a time).

The job (SQLite, items of ~600 characters with a persona, every verdict decided) is stored once
through repo.record_verdicts; each export runs in a child process through the app (Flask's test
client, unbuffered), reading the answer a chunk at a time."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, emit

KEY = "bench-export-key-0123456789"

CHILD = """
import json, sys, time
from api.app import create_app
from store.db import get_engine

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

url, job_id, query, KEY = sys.argv[1:5]
engine = get_engine(url, run_migrations=False)
client = create_app(engine, lambda job: None, {"PJUDGE_API_KEYS": KEY}).test_client()
headers = {"Authorization": f"Bearer {KEY}"}
client.get("/healthz")
import pyarrow.parquet  # imported before the baseline: the library, not the export
before = peak_mb()
started = time.perf_counter()
response = client.get(f"/v1/jobs/{job_id}/export?{query}", headers=headers, buffered=False)
size = chunks = 0
for chunk in response.response:
    size += len(chunk)
    chunks += 1
elapsed = time.perf_counter() - started
print(json.dumps({"status": response.status_code, "bytes": size, "chunks": chunks, "seconds": elapsed,
                  "rss_before_mb": before, "rss_peak_mb": peak_mb()}))
"""


def make_job(url: str, n: int) -> str:
    from judge.profiles import JudgeProfile
    from judge.records import JudgeInfo, PairItem, Verdict
    from store import repo
    from store.db import get_engine

    engine = get_engine(url)
    rng = random.Random(n)
    items = [PairItem(id=f"item-{i:07d}", prompt=f"Question {i}: how should I start saving money? " * 3,
                      response_a="Open a savings account and automate it. " * rng.randint(3, 6),
                      response_b="Track your spending first, then set a budget. " * rng.randint(3, 6),
                      persona={"age": "25-34", "income": "middle"} if i % 2 else "A cautious first-time saver.")
             for i in range(n)]
    job = repo.create_job(engine, repo.hash_key(KEY), items, JudgeProfile(name="persona-certainty", provider="openai",
                                                                model="gpt-4o-2024-08-06")).job
    judge = JudgeInfo(profile="persona-certainty", provider="openai", model="gpt-4o-2024-08-06")
    for start in range(0, n, 2000):
        batch = []
        for position in range(start, min(n, start + 2000)):
            p_a = round(rng.random(), 6)
            batch.append((position, Verdict(
                id=items[position].id, winner="A" if p_a >= 0.5 else "B", p_a=p_a, certainty=round(abs(2 * p_a - 1), 6),
                consistent=rng.random() > 0.2, abstained=False, bpde=0.0, human_label=None, judge=judge,
                calls=[])))
        repo.record_verdicts(engine, job.id, batch)
    engine.dispose()
    return job.id


def export_once(url: str, job_id: str, query: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", CHILD, url, job_id, query, KEY], capture_output=True, text=True,
                            cwd=REPO, timeout=1800, check=True)
    record: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["status"] == 200, record
    return record


def run(as_json: bool = False, quick: bool = False) -> None:
    sizes = (2_000, 20_000) if quick else (10_000, 100_000)
    with tempfile.TemporaryDirectory() as directory:
        for n in sizes:
            url = f"sqlite:///{Path(directory) / f'export-{n}.sqlite'}"
            job_id = make_job(url, n)
            for name, query in (("jsonl", "persona=column"), ("parquet", "as=parquet")):
                record = export_once(url, job_id, query)
                emit({"benchmark": f"export_{name}", "verdicts": n,
                      "rows_per_s": round(n / record["seconds"]), "mb": round(record["bytes"] / 1e6, 1),
                      "rss_before_mb": round(record["rss_before_mb"], 1), "rss_peak_mb": round(record["rss_peak_mb"], 1),
                      "rss_growth_mb": round(record["rss_peak_mb"] - record["rss_before_mb"], 1)}, as_json)


if __name__ == "__main__":
    run(as_json="--json" in sys.argv, quick="--quick" in sys.argv)
