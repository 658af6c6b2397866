"""Jobs of 10,000 to 1,000,000 items submitted through api.client (a generator, sent as a staged
job a page at a time) to `pjudge serve` with a worker against the simulated LLM at 0 ms, the
pipeline benchmark's setup (one worker process, 8 threads, 128 calls in flight, SQLite or
PostgreSQL).

    python -m bench bigjob --items 10000,100000,1000000 [--upload-only-from 1000000] [--early] [--json]

Per size, on a fresh database and fresh processes: the upload time (client.submit: create, every
page, start), split into the pages and the start (which sends the batches to Redis, fsynced per
message as in every benchmark here), the API's RSS as a quarter, half and three quarters of the
items were read, once every page was stored and once started, its peak RSS (VmHWM of `pjudge serve`; it must
not grow with the job) beside its RSS before the upload, the time from the submit's start to the
first verdict, and the end-to-end rate (calls per second from the submit's start to done) beside
the rate of the pipeline benchmark's job (5,000 items in one POST /v1/jobs) run on the same
processes just before, so that both see the same load. From `--upload-only-from` items on, no
worker runs: the upload alone is measured (the job stays queued).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import emit
from bench.pipeline import IN_FLIGHT, KEY, WORKER_THREADS, _items

REFERENCE_ITEMS = 5000  # the pipeline benchmark's job


def _item_stream(n: int, at_quarters: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """n items like the pipeline benchmark's, made as they are read (never listed); `at_quarters`
    is called with 1, 2, 3 when a quarter, half, three quarters of them have been read."""
    block = 5000
    marks = {n * q // 4: q for q in (1, 2, 3)}
    for start in range(0, n, block):
        for row in _items(min(block, n - start)):
            index = start + int(row["id"][1:])
            if at_quarters is not None and index in marks:
                at_quarters(marks[index])
            yield {**row, "id": f"big{index}", "prompt": f"{row['prompt']} [{index}]"}


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _wait_done(client: Any, job_id: str, started: float, timeout: float) -> tuple[Any, float | None]:
    first = None
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id).status()
        now = time.perf_counter()
        if first is None and job.counts.verdicts > 0:
            first = now - started
        if job.status in ("done", "failed", "cancelled", "budget_exhausted"):
            return job, first
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not done in {timeout} s: {job.counts}")
        time.sleep(0.1)


def _measure(database_url: str, folder: Path, n_items: int, with_worker: bool, early: bool) -> dict[str, Any]:
    from api.client import Client
    from llm_sim.harness import Process, RedisServer, free_port, wait_for_port
    from llm_sim.process import SimProcess

    redis = RedisServer(folder / "redis").start()
    sim = SimProcess("--latency-ms", "0", "--seed", "1").start()
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis.url, "PJUDGE_HOME": str(folder / "home"),
                "PJUDGE_API_KEYS": KEY, "PJUDGE_WORKER_MAX_IN_FLIGHT": str(IN_FLIGHT),
                "PJUDGE_ENDPOINTS": sim.openai_base_url})
    port = free_port()
    api = Process(["serve", "--port", str(port)], env, folder / "api.log").start()
    worker = None
    if with_worker:
        worker = Process(["worker", "--processes=1", f"--concurrency={WORKER_THREADS}", "--no-sweep"], env,
                         folder / "worker.log").start()
    profile = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge",
               "base_url": sim.openai_base_url}
    result: dict[str, Any] = {"items": n_items, "worker": with_worker, "start_early": early}
    try:
        wait_for_port(port, 120)
        if worker is not None:
            deadline = time.monotonic() + 120
            while "pjudge worker ready" not in worker.output():
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not get ready in 120 s")
                time.sleep(0.1)
        pid = api.proc.pid  # type: ignore[union-attr]
        with Client(f"http://127.0.0.1:{port}", KEY, timeout=600) as client:
            if worker is not None:  # the pipeline benchmark's job on the same processes, just before
                started = time.perf_counter()
                reference = client.submit(_items(REFERENCE_ITEMS), profile)
                job, _ = _wait_done(client, reference.id, started, 1800)
                rate = job.counts.calls / (time.perf_counter() - started)
                result.update(reference_items=REFERENCE_ITEMS, reference_calls_per_s=round(rate, 1))
            result["api_rss_before_mb"] = round(_rss_mb(pid, "VmRSS"), 1)
            samples: list[float] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    samples.append(_rss_mb(pid, "VmRSS"))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            load_before = _load()
            quarters: list[float] = []  # the API's RSS as a quarter, half, ... of the items were read
            start_sent: list[float] = []

            first_verdict: list[float] = []

            def watch(job_id: str) -> None:  # the first verdict, while the pages still go (start_early)
                with Client(f"http://127.0.0.1:{port}", KEY, timeout=600) as watcher:
                    while not stop.wait(0.1):
                        if watcher.job(job_id).status().counts.verdicts > 0:
                            first_verdict.append(time.perf_counter() - started)
                            return

            def on_request(request: Any) -> None:
                if request.url.path.endswith("/items") and not first_verdict and worker is not None and early:
                    job_id = request.url.path.split("/")[3]
                    if not any(t.name == "first-verdict" for t in threading.enumerate()):
                        threading.Thread(target=watch, args=(job_id,), name="first-verdict", daemon=True).start()
                if request.url.path.endswith("/start"):
                    start_sent.append(time.perf_counter())
                    quarters.append(_rss_mb(pid, "VmRSS"))  # every page stored

            client._http.event_hooks["request"].append(on_request)
            started = time.perf_counter()
            items = _item_stream(n_items, lambda _: quarters.append(_rss_mb(pid, "VmRSS")))
            job_handle = client.submit(items, profile, start_early=early)
            upload_s = time.perf_counter() - started
            start_s = time.perf_counter() - start_sent[0] if start_sent else 0.0
            quarters.append(_rss_mb(pid, "VmRSS"))  # started: every batch sent
            result.update(upload_s=round(upload_s, 1), pages_s=round(upload_s - start_s, 1),
                          start_s=round(start_s, 1), upload_items_per_s=round(n_items / (upload_s - start_s)),
                          api_rss_at_quarters_pages_started_mb=[round(value, 1) for value in quarters],
                          load_before=load_before, load_after_upload=_load())
            if worker is not None:
                job, first = _wait_done(client, job_handle.id, started, 6 * 3600)
                elapsed = time.perf_counter() - started
                result.update(status=job.status, calls=job.counts.calls, seconds=round(elapsed, 1),
                              first_verdict_s=round(first_verdict[0] if first_verdict else first or 0.0, 2),
                              calls_per_s=round(job.counts.calls / elapsed, 1))
                result["rate_vs_reference"] = round(result["calls_per_s"] / result["reference_calls_per_s"], 3)
                # every verdict streamed back through the API: its memory stays flat for that too
                streamed = sum(1 for _ in job_handle.verdicts(stream=True))
                result["verdicts_streamed"] = streamed
            else:
                result["status"] = job_handle.status().status
            stop.set()
            sampler.join()
            result.update(api_rss_max_sampled_mb=round(max(samples, default=0.0), 1),
                          api_peak_rss_mb=round(_rss_mb(pid, "VmHWM"), 1), load_after=_load())
        return result
    except Exception:
        print(api.output()[-3000:], worker.output()[-3000:] if worker else "")
        raise
    finally:
        api.stop()
        if worker is not None:
            worker.stop()
        redis.stop()
        sim.stop()


def run(as_json: bool, quick: bool = False, items: str | None = None, upload_only_from: int | None = None,
        early: bool = False) -> None:
    import tempfile

    sizes = [int(n) for n in (items or ("2000,10000" if quick else "10000,100000")).split(",")]
    admin_url = os.environ.get("PJUDGE_BENCH_POSTGRES_URL")
    for n_items in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if admin_url:
                from llm_sim.harness import create_postgres_database, drop_postgres_database

                url = create_postgres_database(admin_url)
            else:
                url = f"sqlite:///{folder}/bench.sqlite"
            try:
                with_worker = upload_only_from is None or n_items < upload_only_from
                record = _measure(url, folder, n_items, with_worker, early)
            finally:
                if admin_url:
                    drop_postgres_database(url, admin_url)
        emit({"benchmark": "bigjob", "database": "postgresql" if admin_url else "sqlite", **record,
              "in_flight": IN_FLIGHT, "worker_threads": WORKER_THREADS}, as_json)
