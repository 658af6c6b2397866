"""Fairness between tenants through the whole service (API, Redis, one worker process of 8
threads, SQLite): how long tenant B's 10-item job takes while tenant A's 10,000-item job hangs on
an endpoint that accepts connections and never answers, beside B's time alone on the idle
service.

A's endpoint is the operator's (PJUDGE_BASE_URL: a tiny asyncio server on loopback started here);
B judges with `pjudge llm-sim` at 0 ms. B's time is from POST to status done, polled every 20 ms;
each figure is the median of RUNS jobs (each of new items, so the call cache answers none).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit
from bench.pipeline import _http, _items
from llm_sim.process import SimProcess

WORKER_THREADS = 8
IN_FLIGHT = 128
KEY_A = "bench-tenant-a-0123456789abcdef"
KEY_B = "bench-tenant-b-0123456789abcdef"
RUNS = 3


def _post(url: str, key: str, items: list[dict[str, Any]], profile: dict[str, Any]) -> str:
    return str(_http("POST", f"{url}/v1/jobs", {"items": items, "profile": profile}, key=key)["job_id"])


def _wait_done(url: str, key: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _http("GET", f"{url}/v1/jobs/{job_id}", key=key)
        if job["status"] in ("done", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} not done in {timeout} s")


def _b_job(url: str, profile: dict[str, Any], run: int) -> float:
    items = [{**row, "id": f"b{run}-{row['id']}", "prompt": f"{row['prompt']} [run {run}]"} for row in _items(10)]
    posted = time.perf_counter()
    job_id = _post(url, KEY_B, items, profile)
    job = _wait_done(url, KEY_B, job_id)
    if job["status"] != "done" or job["counts"]["verdicts"] != 10:
        raise RuntimeError(f"tenant B's job ended {job['status']}: {job['counts']}")
    return time.perf_counter() - posted


def run(as_json: bool, quick: bool = False) -> None:
    from llm_sim.harness import HangingServer, Process, RedisServer, free_port, wait_for_port

    n_a = 1000 if quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis = RedisServer(folder / "redis").start()
        sim = SimProcess("--latency-ms", "0", "--seed", "1").start()
        hanging = HangingServer().start()
        env = dict(os.environ)
        env.update({"DATABASE_URL": f"sqlite:///{folder}/bench.sqlite", "REDIS_URL": redis.url,
                    "PJUDGE_HOME": str(folder / "home"), "PJUDGE_API_KEYS": f"{KEY_A},{KEY_B}",
                    "PJUDGE_WORKER_MAX_IN_FLIGHT": str(IN_FLIGHT),
                    # The operator's endpoint (A's, hanging), and the simulator B names (allowed).
                    "PJUDGE_BASE_URL": hanging.base_url, "PJUDGE_API_BASE_URLS": sim.openai_base_url,
                    # A's model is priced by the server (jobs on its keys need a price).
                    "PJUDGE_PRICES": '{"hang": {"input_per_mtok": 1, "output_per_mtok": 1}}'})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = Process(["serve", "--port", str(port)], env, folder / "api.log").start()
        worker = Process(["worker", f"--concurrency={WORKER_THREADS}", "--no-sweep"], env,
                         folder / "worker.log").start()
        try:
            wait_for_port(port)
            deadline = time.monotonic() + 120
            while "pjudge worker ready" not in worker.output():
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not get ready in 120 s")
                time.sleep(0.1)
            profile_b = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge",
                         "base_url": sim.openai_base_url}
            profile_a = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "hang"}
            _b_job(url, profile_b, -1)  # the first job pays the worker's first-use costs
            alone = [_b_job(url, profile_b, run) for run in range(RUNS)]

            posted = time.perf_counter()
            job_a = _post(url, KEY_A, [{**row, "id": f"a-{row['id']}"} for row in _items(n_a)], profile_a)
            post_a_s = time.perf_counter() - posted
            # Every thread on A's hanging batches, long enough for them to be handed back.
            deadline = time.monotonic() + 120
            while hanging.open < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(3)
            open_before = hanging.open
            contended = [_b_job(url, profile_b, RUNS + run) for run in range(RUNS)]
            a_status = _http("GET", f"{url}/v1/jobs/{job_a}", key=KEY_A)
        except Exception:
            print(api.output()[-3000:], worker.output()[-3000:])
            raise
        finally:
            stop_started = time.perf_counter()
            worker.stop()
            worker_stop_s = time.perf_counter() - stop_started
            api.stop()
            redis.stop()
            sim.stop()
            hanging.stop()
    alone_s, contended_s = statistics.median(alone), statistics.median(contended)
    emit({"benchmark": "fairness", "a_items": n_a, "a_status": a_status["status"],
          "a_verdicts": a_status["counts"]["verdicts"], "a_post_s": round(post_a_s, 2),
          "a_open_connections": open_before, "b_items": 10,
          "b_alone_s": round(alone_s, 3), "b_beside_hanging_a_s": round(contended_s, 3),
          "ratio": round(contended_s / alone_s, 2), "b_delay_s": round(contended_s - alone_s, 3),
          "runs_alone_s": [round(t, 3) for t in alone], "runs_beside_s": [round(t, 3) for t in contended],
          "worker_sigterm_to_exit_s": round(worker_stop_s, 2), "worker_threads": WORKER_THREADS,
          "in_flight": IN_FLIGHT}, as_json)
