"""Dashboard queries on 1,000,000 stored verdicts (50 jobs, 3 profiles): p50/p95 latency of
GET /v1/stats/agreement (plain, group_by a metadata key, group_by profile, a time range, an off-grid
threshold with risk control) and of GET /v1/jobs/{id}/report. Target: p95 under 100 ms. Then the
dashboard's first page (`time_dashboard`: its HTML, script, style and plotly.js, the jobs poll,
/v1/stats/agreement?per_day=true and the per-group page). Target: p95 under a second.

The verdicts go in through store.repo.record_verdicts (the workers' own write path, summaries
included) in batches of 5,000, each job's verdicts spread over two hours and the jobs over 29 days.
The requests go through Flask's test client (the whole app: auth, parsing, JSON; no network), 30
per query after 3 warm-ups, on SQLite, then on PostgreSQL when PJUDGE_TEST_POSTGRES_URL is set.
`--quick`: 100,000 verdicts.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import emit, skip

JOBS = 50
PROFILES = ("persona-certainty", "persona-tie", "faireval")
MODELS = ("gpt-4o-2024-08-06", "claude-3-5-sonnet")
DATASETS = ("prism", "ec", "ap", "personalized-judge", "llmbar")
BATCH = 5000
REQUESTS = 30
WARMUP = 3
TARGET_MS = 100.0
DASHBOARD_TARGET_MS = 1000.0  # issue 17: the dashboard's first page in under a second
KEY = "bench-stats-key-0123456789"
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _verdicts(job: int, items: list[tuple[int, Any]], profile: str, model: str) -> list[tuple[int, Any]]:
    """Verdicts as the runner makes them: two orders, verbal certainty, SPEC 3.1 aggregation."""
    from judge.records import Call, JudgeInfo, Verdict

    rng = random.Random(job)
    info = JudgeInfo(profile=profile, provider="openai", model=model)
    out = []
    for position, item in items:
        label = item.human_label
        truth = label if label in ("A", "B") else rng.choice("AB")
        calls, votes = [], []
        for order in ("AB", "BA"):
            r = rng.random()
            choice = truth if r < 0.72 else ("tie" if r < 0.78 else ("B" if truth == "A" else "A"))
            u = rng.randint(40, 100) / 100
            calls.append(Call(order=order, sample=0, raw="", choice=choice, certainty=u,  # type: ignore[arg-type]
                              input_tokens=500, output_tokens=9, cost_usd=0.001, latency_s=0.5))
            votes.append(0.5 + u / 2 if choice == "A" else 0.5 - u / 2 if choice == "B" else 0.5)
        p_a = round(sum(votes) / 2, 9)
        winner = "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"
        outcomes = [c.choice for c in calls]
        bpde = 0.0 if outcomes[0] == outcomes[1] else math.log(2)
        certainty = round(abs(2 * p_a - 1), 9)
        out.append((position, Verdict(
            id=item.id, winner=winner, p_a=p_a, certainty=certainty, consistent=outcomes[0] == outcomes[1],
            abstained=certainty < 0.3, bpde=bpde, human_label=label, judge=info, calls=calls,
            len_a=len(item.response_a), len_b=len(item.response_b), metadata=dict(item.metadata))))
    return out


def load(engine: Any, owner: str, n: int) -> tuple[list[str], float]:
    """n verdicts over JOBS jobs; returns (job ids, seconds)."""
    from judge.profiles import JudgeProfile
    from judge.records import PairItem
    from store import repo

    started = time.perf_counter()
    per_job = n // JOBS
    job_ids = []
    for j in range(JOBS):
        rng = random.Random(1000 + j)
        profile = JudgeProfile(name=PROFILES[j % len(PROFILES)], provider="openai", model=MODELS[j % len(MODELS)])
        items = [PairItem(id=f"j{j}-{i}", prompt=f"Question {i}?", response_a="a" * rng.randint(20, 400),
                          response_b="b" * rng.randint(20, 400),
                          human_label=rng.choice(("A", "B", "A", "B", "tie", None)),
                          metadata={"dataset": rng.choice(DATASETS), "persona_group": f"g{rng.randint(0, 7)}"})
                 for i in range(per_job)]
        job = repo.create_job(engine, owner, items, profile).job
        job_ids.append(job.id)
        stored = repo.job_items(engine, job.id, 0, per_job)
        begins = START + timedelta(hours=14 * j)  # jobs 14 hours apart, each over two hours
        batches = range(0, per_job, BATCH)
        for b, start in enumerate(batches):
            verdicts = _verdicts(j, stored[start:start + BATCH], profile.name, profile.model)
            repo.record_verdicts(engine, job.id, verdicts, now=begins + timedelta(hours=2) * b / len(batches))
        repo.finish_if_complete(engine, job.id)
    return job_ids, time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def time_queries(engine: Any, job_ids: list[str]) -> dict[str, Timings]:
    from api.app import create_app

    client = create_app(engine, lambda job: None, {"PJUDGE_API_KEYS": KEY}).test_client()
    headers = {"Authorization": f"Bearer {KEY}"}
    since = (START + timedelta(days=7, minutes=17, seconds=5)).isoformat()
    until = (START + timedelta(days=20, hours=3, minutes=43)).isoformat()
    queries = {
        "plain": lambda i: "/v1/stats/agreement",
        "group_by": lambda i: "/v1/stats/agreement?group_by=dataset",
        "group_by_profile": lambda i: "/v1/stats/agreement?group_by=profile",
        "time_range": lambda i: f"/v1/stats/agreement?since={since.replace('+', '%2B')}&until={until.replace('+', '%2B')}",
        "job_report": lambda i: f"/v1/jobs/{job_ids[i % len(job_ids)]}/report",
        # a threshold off the 0.01 grid (a scan of the verdicts in its bin) with risk control
        "offgrid_risk": lambda i: "/v1/stats/agreement?threshold=0.837&target_accuracy=0.9",
    }
    out: dict[str, Timings] = {}
    for name, url in queries.items():
        out[name] = _timed(client, url, headers)
    return out


Timings = list[tuple[float, float]]
"""(wall, CPU) milliseconds of each request: the CPU time is this process's (the app and, on
SQLite, the database), a steadier figure than wall time on a shared machine."""


def _timed(client: Any, url: Any, headers: dict[str, str] | None = None) -> Timings:
    """(wall, CPU) milliseconds of REQUESTS GETs of url(i) after WARMUP ones."""
    times = []
    for i in range(WARMUP + REQUESTS):
        started, cpu = time.perf_counter(), time.process_time()
        response = client.get(url(i), headers=headers)
        response.get_data()
        elapsed, used = time.perf_counter() - started, time.process_time() - cpu
        if response.status_code != 200:
            raise RuntimeError(f"{url(i)}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        if i >= WARMUP:
            times.append((elapsed * 1000, used * 1000))
    return times


def time_dashboard(engine: Any) -> dict[str, Timings]:
    """The dashboard's first page as a browser loads it, signed in: its HTML (the totals, the
    per-day charts' numbers, the jobs: every statistic is computed in this request, the charts
    make no request of their own), its script, style sheet and plotly.js; then the jobs poll the
    page makes every 5 s, /v1/stats/agreement?per_day=true (the query the page names for its
    charts) and the per-group page. "first_page": each round's HTML, script, style and plotly.js
    requests one after the other."""
    import re

    import plotly

    from api.app import create_app

    client = create_app(engine, lambda job: None, {"PJUDGE_API_KEYS": KEY}).test_client()
    login = client.get("/dashboard/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token is not None
    signed_in = client.post("/dashboard/login", data={"key": KEY, "csrf_token": token.group(1)})
    assert signed_in.status_code == 302, signed_in.status_code
    assets = ["/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css",
              f"/dashboard/plotly-{plotly.__version__}.min.js"]
    out = {"dashboard_html": _timed(client, lambda i: "/dashboard/")}
    for name, url in zip(("dashboard_js", "dashboard_css", "plotly_js"), assets, strict=True):
        out[name] = _timed(client, lambda i, url=url: url)
    rounds = zip(*(out[name] for name in ("dashboard_html", "dashboard_js", "dashboard_css", "plotly_js")),
                 strict=True)
    out["first_page"] = [(sum(wall for wall, _ in parts), sum(cpu for _, cpu in parts)) for parts in rounds]
    out["dashboard_jobs_poll"] = _timed(client, lambda i: "/dashboard/data/jobs")
    out["per_day_api"] = _timed(client, lambda i: "/v1/stats/agreement?per_day=true",
                                {"Authorization": f"Bearer {KEY}"})
    out["dashboard_groups"] = _timed(client, lambda i: "/dashboard/groups?group_by=dataset")
    return out


@contextmanager
def _postgres() -> Iterator[str | None]:
    admin = os.environ.get("PJUDGE_TEST_POSTGRES_URL")
    if not admin:
        yield None
        return
    import psycopg

    name = f"pjudge_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_on(url: str, database: str, n: int, as_json: bool) -> None:
    from store.db import create_db_engine, migrate
    from store.repo import hash_key

    engine = create_db_engine(url)
    migrate(engine)
    try:
        job_ids, load_s = load(engine, hash_key(KEY), n)
        loaded = {"load_seconds": round(load_s, 1), "load_verdicts_per_second": round(n / load_s)}
        report_times(database, n, time_queries(engine, job_ids), TARGET_MS, loaded, as_json)
        report_times(database, n, time_dashboard(engine), DASHBOARD_TARGET_MS, loaded, as_json)
    finally:
        engine.dispose()


def report_times(database: str, n: int, timings: dict[str, Timings], target_ms: float,
                 extra: dict[str, Any], as_json: bool) -> None:
    for name, measured in timings.items():
        times = [wall for wall, _ in measured]
        p95 = _percentile(times, 0.95)
        emit({"benchmark": "stats", "database": database, "query": name, "verdicts": n, "jobs": JOBS,
              "profiles": len(PROFILES), "requests": len(times), "client": "flask test client",
              "p50_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2),
              "max_ms": round(max(times), 2), "p95_cpu_ms": round(_percentile([c for _, c in measured], 0.95), 2),
              "target_ms": target_ms, "meets_target": p95 < target_ms,
              "load_average": round(os.getloadavg()[0], 2), **extra}, as_json)


def run(as_json: bool, quick: bool = False) -> None:
    n = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        _run_on(f"sqlite:///{Path(folder) / 'stats.sqlite'}", "sqlite", n, as_json)
    with _postgres() as url:
        if url is None:
            skip("stats", "PostgreSQL: PJUDGE_TEST_POSTGRES_URL not set", as_json)
            return
        _run_on(url.replace("postgresql://", "postgresql+psycopg://", 1), "postgresql", n, as_json)
