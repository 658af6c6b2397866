"""A 5,000-item job (swap on, k = 1: 10,000 calls) through the whole service (API, Redis,
`pjudge worker`, SQLite, then PostgreSQL when PJUDGE_TEST_POSTGRES_URL is set) against the
simulated LLM answering in 0 ms and in 200 ms.

Each job runs on both HTTP transports of the openai-compatible provider: the official SDK's
client (`transport = "sdk"`) and the lean aiohttp client with the same retry rules
(`transport = "direct"`, the provider's default), and with one worker process against one per
core (the default of `pjudge worker`), the host's 8 threads and 128 calls in flight split across
them.

Compared in the same run with its bound: for 0 ms the calls per second of a bare loop of the same
SDK calls against the same server (median of 3; measured in the one-process runs), with a bare
loop of the direct client's calls beside it, and the one-per-core rate over the one-process rate;
for 200 ms the in-flight limit over the latency. Each configuration runs 3 times on a fresh
database; the line gives the run with the median ratio, every run's rate and ratio, and the median
time from POST to the first verdict. CPU per call is the worker's (all its processes), the API's
(the job's POST and this benchmark's polls every 50 ms) and the simulator's, which shares the
machine. `--only KEY=V1,V2` runs a part (python -m bench pipeline --only latency=200).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import emit
from llm_sim.process import SimProcess

IN_FLIGHT = 128  # calls in flight on the worker host (PJUDGE_WORKER_MAX_IN_FLIGHT), split across its processes
WORKER_THREADS = 8  # on the host (--concurrency), split likewise
REPEATS = 3  # runs per configuration; the figures are those of the run with the median ratio
KEY = "bench-key-0123456789abcdef"


def _items(n: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    interests = ["gardening", "chess", "cycling", "baking", "astronomy", "painting", "fishing", "violin",
                 "hiking", "poetry", "football", "knitting", "photography", "sailing", "climbing", "pottery"]
    rows = []
    for i in range(n):
        likes = rng.sample(interests, 3)
        others = [w for w in interests if w not in likes][:3]
        good = f"Spend weekends on {likes[0]}, join a {likes[1]} club and read about {likes[2]} (#{i})."
        bad = f"Spend weekends on {others[0]}, join a {others[1]} club and read about {others[2]} (#{i})."
        label = rng.choice("AB")
        a, b = (good, bad) if label == "A" else (bad, good)
        rows.append({"id": f"b{i}", "persona": f"The person enjoys {', '.join(likes)}.",
                     "prompt": f"How should I spend my free time? ({i})", "response_a": a, "response_b": b,
                     "human_label": label})
    return rows


def _http(method: str, url: str, body: Any = None, key: str = KEY) -> Any:
    from llm_sim.harness import http_json

    return http_json(method, url, body, key)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _tree_cpu(pid: int) -> float:
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            total += _cpu_seconds(p)
        except OSError:
            pass
    return total


def _peak_rss_mb(pid: int) -> float:
    peak = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def _prompt(row: dict[str, Any]) -> str:
    return (f"[User Profile]\n{row['persona']}\n\n[User Question]\n{row['prompt']}\n\n"
            f"[The Start of Assistant A's Answer]\n{row['response_a']}\n[The End of Assistant A's Answer]\n\n"
            f"[The Start of Assistant B's Answer]\n{row['response_b']}\n[The End of Assistant B's Answer]")


async def _bare_loop(post: Callable[[dict[str, Any]], Awaitable[Any]], calls: int,
                     concurrency: int = IN_FLIGHT) -> float:
    """Calls per second of `post` alone on the judge's request bodies, `concurrency` in flight."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> None:
        async with semaphore:
            await post({"model": "sim-judge", "messages": [{"role": "user", "content": _prompt(row)}],
                        "max_tokens": 64, "temperature": 0.0})

    items = _items(calls)
    started = time.perf_counter()
    await asyncio.gather(*(one(row) for row in items))
    return calls / (time.perf_counter() - started)


async def _bare_direct_loop(base_url: str, calls: int) -> float:
    """The direct transport's client alone, with nothing else around it."""
    from judge.providers.direct_http import DirectJsonClient

    client = DirectJsonClient(base_url, "no-key", max_retries=0, timeout_s=60)
    try:
        return await _bare_loop(lambda body: client.post("/chat/completions", body), calls)
    finally:
        await client.aclose()


async def _bare_sdk_loop(base_url: str, calls: int) -> float:
    """The same SDK calls the provider makes, with nothing else around them."""
    import openai

    client = openai.AsyncOpenAI(api_key="no-key", base_url=base_url, max_retries=0,
                                http_client=openai.DefaultAioHttpClient())
    try:
        return await _bare_loop(lambda body: client.post("/chat/completions", cast_to=object, body=body), calls)
    finally:
        await client.close()


def _run_job(database_url: str, latency_ms: int, n_items: int, folder: Path, transport: str,
             processes: int) -> dict[str, Any]:
    from llm_sim.harness import Process, RedisServer, free_port, wait_for_port

    redis = RedisServer(folder / f"redis-{latency_ms}").start()
    sim = SimProcess("--latency-ms", str(latency_ms), "--seed", "1").start()
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis.url, "PJUDGE_HOME": str(folder / "home"),
                "PJUDGE_API_KEYS": KEY, "PJUDGE_WORKER_MAX_IN_FLIGHT": str(IN_FLIGHT),
                "PJUDGE_ENDPOINTS": sim.openai_base_url})  # the operator's own endpoint, on loopback
    port = free_port()
    api = Process(["serve", "--port", str(port)], env, folder / "api.log").start()
    worker = Process(["worker", f"--processes={processes}", f"--concurrency={WORKER_THREADS}", "--no-sweep"], env,
                     folder / "worker.log").start()
    try:
        wait_for_port(port, 120)  # a loaded machine may take longer than the default to start the API
        deadline = time.monotonic() + 120
        # The clock starts with every worker process taking tasks.
        while worker.output().count("pjudge worker ready") < processes:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker processes did not get ready in 120 s")
            time.sleep(0.1)
        items = _items(n_items)
        profile = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge",
                   "base_url": sim.openai_base_url, "transport": transport}
        api_before, worker_before = _tree_cpu(api.proc.pid), _tree_cpu(worker.proc.pid)  # type: ignore[union-attr]
        sim_before = _tree_cpu(sim.proc.pid)  # type: ignore[union-attr]
        posted = time.perf_counter()
        job_id = _http("POST", f"http://127.0.0.1:{port}/v1/jobs", {"items": items, "profile": profile})["job_id"]
        post_ms = (time.perf_counter() - posted) * 1000
        first_verdict = None
        while True:
            job = _http("GET", f"http://127.0.0.1:{port}/v1/jobs/{job_id}")
            now = time.perf_counter()
            if first_verdict is None and job["counts"]["verdicts"] > 0:
                first_verdict = now - posted
            if job["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.05)
        elapsed = now - posted
        api_cpu = _tree_cpu(api.proc.pid) - api_before  # type: ignore[union-attr]
        worker_cpu = _tree_cpu(worker.proc.pid) - worker_before  # type: ignore[union-attr]
        sim_cpu = _tree_cpu(sim.proc.pid) - sim_before  # type: ignore[union-attr]
        cpu = api_cpu + worker_cpu
        calls = job["counts"]["calls"]
        return {"status": job["status"], "calls": calls, "seconds": round(elapsed, 2),
                "calls_per_s": round(calls / elapsed, 1), "first_verdict_ms": round((first_verdict or 0) * 1000),
                "post_ms": round(post_ms),
                "cpu_ms_per_call": round(cpu * 1000 / max(calls, 1), 3),
                "worker_cpu_ms_per_call": round(worker_cpu * 1000 / max(calls, 1), 3),
                "api_cpu_ms_per_call": round(api_cpu * 1000 / max(calls, 1), 3),
                # The simulated server shares the machine: what it takes is not the worker's.
                "sim_cpu_ms_per_call": round(sim_cpu * 1000 / max(calls, 1), 3),
                "worker_peak_rss_mb": round(_peak_rss_mb(worker.proc.pid), 1),  # type: ignore[union-attr]
                "sim_base_url": sim.openai_base_url, "sim": sim}
    except Exception:
        print(api.output()[-3000:], worker.output()[-3000:])
        raise
    finally:
        api.stop()
        worker.stop()
        redis.stop()


def _bare_loops(base_url: str, calls: int) -> dict[str, float]:
    """Median calls per second of 3 bare loops of each client against the server (the worker's
    kind of event loop)."""
    from judge.runner import new_event_loop

    rates: dict[str, list[float]] = {"sdk": [], "direct": []}
    loop = new_event_loop()
    try:
        for _ in range(3):
            rates["sdk"].append(loop.run_until_complete(_bare_sdk_loop(base_url, calls)))
            rates["direct"].append(loop.run_until_complete(_bare_direct_loop(base_url, calls)))
    finally:
        loop.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def _one_run(db_name: str, admin_url: str | None, latency_ms: int, n_items: int, transport: str,
             processes: int, bare_loops: bool) -> dict[str, Any]:
    """One job on a fresh database, with (`bare_loops`) its bound measured against the same simulator."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if admin_url is None:
            url = f"sqlite:///{folder}/bench.sqlite"
        else:
            from llm_sim.harness import create_postgres_database

            url = create_postgres_database(admin_url)
        result = _run_job(url, latency_ms, n_items, folder, transport, processes)
        sim = result.pop("sim")
        base_url = result.pop("sim_base_url")
        try:
            bare = _bare_loops(base_url, min(n_items * 2, 3000)) if latency_ms == 0 and bare_loops else None
        finally:
            sim.stop()
        if admin_url is not None:
            from llm_sim.harness import drop_postgres_database

            drop_postgres_database(url, admin_url)
    if bare is not None:
        result.update(bound_calls_per_s=round(bare["sdk"], 1),
                      bound="bare SDK loop against the same server (median of 3)",
                      bare_direct_calls_per_s=round(bare["direct"], 1),
                      ratio_to_bare_direct=round(result["calls_per_s"] / bare["direct"], 3))
    elif latency_ms > 0:
        result.update(bound_calls_per_s=IN_FLIGHT / (latency_ms / 1000),
                      bound=f"{IN_FLIGHT} calls in flight / {latency_ms} ms")
    if "bound_calls_per_s" in result:
        result["ratio"] = round(result["calls_per_s"] / result["bound_calls_per_s"], 3)
    else:
        result["ratio"] = None  # set by run() from the one-process runs' bound
    return result


def run(as_json: bool, quick: bool = False, only: dict[str, list[str]] | None = None) -> None:
    """Every configuration, or those of `only` (python -m bench pipeline --only KEY=V1,V2): the
    values of a dimension to run (database, latency, transport, processes; processes by number).
    At 0 ms a per-core run compares with the one-process runs: run both."""
    only = only or {}
    unknown = set(only) - {"database", "latency", "transport", "processes"}
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}")

    def wanted(key: str, value: object) -> bool:
        return key not in only or str(value) in only[key]

    n_items, repeats = (500, 1) if quick else (5000, REPEATS)
    per_core = os.cpu_count() or 1
    databases: list[tuple[str, str | None]] = [("sqlite", None)]
    if os.environ.get("PJUDGE_TEST_POSTGRES_URL"):
        databases.append(("postgresql", os.environ["PJUDGE_TEST_POSTGRES_URL"]))
    for db_name, admin_url in [d for d in databases if wanted("database", d[0])]:
        for latency_ms in [latency for latency in (0, 200) if wanted("latency", latency)]:
            for transport in [t for t in ("sdk", "direct") if wanted("transport", t)]:
                one_process: list[dict[str, Any]] = []
                for processes in [n for n in sorted({1, per_core}) if wanted("processes", n)]:
                    runs = [_one_run(db_name, admin_url, latency_ms, n_items, transport, processes,
                                     bare_loops=processes == 1) for _ in range(repeats)]
                    extra: dict[str, Any] = {}
                    if processes == 1:
                        one_process = runs
                    elif one_process:
                        extra["ratio_to_one_process"] = round(
                            statistics.median(r["calls_per_s"] for r in runs)
                            / statistics.median(r["calls_per_s"] for r in one_process), 3)
                        if latency_ms == 0:  # the bound of the one-process runs: same server, same calls
                            bound = statistics.median(r["bound_calls_per_s"] for r in one_process)
                            for r in runs:
                                r.update(bound_calls_per_s=bound, bound=f"{one_process[0]['bound']}, one-process runs",
                                         ratio=round(r["calls_per_s"] / bound, 3))
                    median = sorted(runs, key=lambda r: r["ratio"] or r["calls_per_s"])[len(runs) // 2]  # the median run
                    emit({"benchmark": "pipeline", "database": db_name, "transport": transport, "latency_ms": latency_ms,
                          "processes": processes, "items": n_items, **median, **extra, "runs": repeats,
                          "runs_calls_per_s": [r["calls_per_s"] for r in runs], "runs_ratio": [r["ratio"] for r in runs],
                          "first_verdict_ms_median": statistics.median(r["first_verdict_ms"] for r in runs),
                          "runs_first_verdict_ms": [r["first_verdict_ms"] for r in runs],
                          "in_flight": IN_FLIGHT, "worker_threads": WORKER_THREADS}, as_json)
