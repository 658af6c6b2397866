"""`pjudge worker` runs one worker process per core (issue 18): the host's threads and calls in
flight split across them, each process supervised on its own. Against real parts: a Redis server,
the worker processes, SQLite and PostgreSQL, the simulated LLM and an endpoint that hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from judge.settings import reset_settings
from store import repo
from tests.support.services import (
    HangingServer,
    Process,
    RedisServer,
    Service,
    create_postgres_database,
    drop_postgres_database,
    many_items,
    sim_profile,
)
from tests.test_fairness import hanging_profile, wait_for
from worker.processes import Share, split


def children(process: Process) -> list[int]:
    """The worker processes of a `pjudge worker` (its supervisor's children)."""
    assert process.proc is not None
    pid = process.proc.pid
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def start(service: Service, *flags: str) -> Process:
    log = service.tmp_path / f"worker-{len(service.workers)}.log"
    worker = Process(["worker", "--loglevel=INFO", *flags], service.env, log).start()
    service.workers.append(worker)
    return worker


def ready(worker: Process, processes: int) -> None:
    wait_for(lambda: worker.output().count("pjudge worker ready") >= processes, 120, f"{processes} processes ready")


@pytest.fixture
def sqlite_service(tmp_path: Path, redis_server: RedisServer) -> Iterator[Service]:
    svc = Service(tmp_path, f"sqlite:///{tmp_path}/service.sqlite", redis_server)
    yield svc
    svc.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_service(request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer) -> Iterator[Service]:
    url = f"sqlite:///{tmp_path}/service.sqlite" if request.param == "sqlite" else create_postgres_database()
    svc = Service(tmp_path, url, redis_server)
    yield svc
    svc.stop()
    if request.param == "postgresql":
        drop_postgres_database(url)


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    server = HangingServer().start()
    yield server
    server.stop()


# ---------------------------------------------------------------- the split of the host's budgets

def test_the_hosts_threads_and_calls_in_flight_are_split_evenly_and_one_process_sweeps() -> None:
    assert split(2, 8, 128) == [Share(0, 2, 4, 64, True), Share(1, 2, 4, 64, False)]
    shares = split(3, 8, 100)
    assert [s.threads for s in shares] == [3, 3, 2] and sum(s.threads for s in shares) == 8
    assert [s.max_in_flight for s in shares] == [34, 33, 33]
    assert [s.sweep for s in split(3, 8, 100, sweep=False)] == [False] * 3


def test_each_process_keeps_two_threads_so_a_tenants_share_leaves_one_to_another() -> None:
    assert split(4, 2, 256) == [Share(0, 1, 2, 256, True)]
    assert [s.threads for s in split(8, 7, 256)] == [3, 2, 2]
    assert [s.max_in_flight for s in split(3, 6, 2)] == [1, 1, 1]  # at least one call each


def test_one_process_per_core_by_default_with_four_threads_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PJUDGE_WORKER_PROCESSES", raising=False)
    monkeypatch.delenv("PJUDGE_WORKER_MAX_IN_FLIGHT", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    reset_settings()
    assert [(s.threads, s.max_in_flight) for s in split()] == [(4, 86), (4, 85), (4, 85)]
    monkeypatch.setenv("PJUDGE_WORKER_PROCESSES", "2")
    reset_settings()
    assert len(split()) == 2 and len(split(processes=5)) == 5
    reset_settings()


# ---------------------------------------------------------------- through Redis and worker processes

def test_every_process_takes_tasks_and_sigterm_stops_all_within_the_grace(
        sqlite_service: Service, hanging: HangingServer) -> None:
    import redis

    from worker import lanes

    service = sqlite_service
    service.env["PJUDGE_SHUTDOWN_GRACE_S"] = "1"
    worker = start(service, "--processes=2", "--concurrency=4")
    ready(worker, 2)
    assert len(children(worker)) == 2
    jobs = [service.submit(many_items(1, seed=s), hanging_profile(hanging), owner="tenant-a") for s in range(4)]
    # Two threads per process: eight calls hang only when both processes hold two batches each.
    wait_for(lambda: hanging.open >= 8, 60, "four batches' calls on the hanging endpoint")
    assert worker.proc is not None
    started = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)  # the supervisor only: it passes the signal on
    try:
        code = worker.proc.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill9()
        raise AssertionError(f"still stopping after 30 s:\n{worker.output()[-3000:]}") from None
    elapsed = time.monotonic() - started
    assert elapsed < 10 and code == 0, (elapsed, code, worker.output()[-3000:])
    assert hanging.open == 0
    assert lanes.backlog(redis.Redis.from_url(service.redis.url), "pjudge") == 4  # all handed back
    assert all(repo.get_job(service.engine, j).status in repo.ACTIVE for j in jobs)
    print(f"two worker processes stopped {elapsed:.2f} s after SIGTERM")


def test_kill_9_of_one_process_loses_and_duplicates_nothing_and_it_is_restarted(
        any_service: Service, start_sim) -> None:
    service = any_service
    sim = start_sim("--latency-ms", "150", "--seed", "8")
    # The killed process's tasks come back after the visibility timeout: 10 s instead of 30, still
    # ten times a task's run (16 items at 150 ms); a task sent twice would be harmless anyway.
    service.env["PJUDGE_VISIBILITY_TIMEOUT"] = "10"
    worker = start(service, "--processes=2", "--concurrency=4")
    ready(worker, 2)
    job_id = service.submit(many_items(2000), sim_profile(sim))
    service.wait_verdicts(job_id, 300, timeout=120)
    victim, survivor = children(worker)
    os.kill(victim, signal.SIGKILL)
    assert repo.get_job(service.engine, job_id).n_verdicts < 2000
    wait_for(lambda: len(children(worker)) == 2 and victim not in children(worker), 30, "the process restarted")
    assert survivor in children(worker)  # the other process was left alone
    job = service.wait_done(job_id, 150)
    assert service.row_counts(job_id) == {"verdicts": 2000, "distinct_verdicts": 2000, "calls": 4000}
    assert (job.status, job.n_verdicts, job.n_calls) == ("done", 2000, 4000)
    assert "exited with code -9; restarting" in worker.output()


def test_a_requests_per_minute_limit_holds_across_the_processes(sqlite_service: Service, start_sim) -> None:
    service = sqlite_service
    sim = start_sim()
    worker = start(service, "--processes=3", "--concurrency=6")
    ready(worker, 3)
    # 240 requests per minute = 4 per second, the bucket starts full (240): 260 calls need ~5 s more.
    started = time.monotonic()
    job_id = service.submit(many_items(130, seed=4), sim_profile(sim, requests_per_minute=240), batch_size=8)
    served = []
    while (job := repo.get_job(service.engine, job_id)).status not in repo.TERMINAL:
        served.append((time.monotonic() - started, sim.stats()["requests"]))
        assert time.monotonic() - started < 120
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    assert job.n_calls == 260 and elapsed > 4.0, (job.n_calls, elapsed)
    # Never more than the bucket plus its refill so far (with one request of slack per process).
    assert all(requests <= 240 + 4 * at + 3 for at, requests in served), served


def test_a_tenant_whose_endpoint_hangs_holds_only_its_share_of_each_process(
        sqlite_service: Service, start_sim, hanging: HangingServer) -> None:
    service = sqlite_service
    sim = start_sim()
    worker = start(service, "--processes=2", "--concurrency=4")
    ready(worker, 2)
    # Tenant A fills all four threads of both processes with calls that never end.
    stuck = [service.submit(many_items(1, seed=s), hanging_profile(hanging), owner="tenant-a") for s in range(6)]
    wait_for(lambda: hanging.open >= 8, 60, "every thread of both processes on the hanging endpoint")
    time.sleep(3)  # past the least a batch runs before it may be handed back
    posted = time.monotonic()
    jobs = [service.submit(many_items(4, seed=10 + i), sim_profile(sim), owner="tenant-b") for i in range(2)]
    done = [service.wait_done(job_id, 40) for job_id in jobs]
    waited = time.monotonic() - posted
    assert [(job.status, job.n_verdicts) for job in done] == [("done", 4), ("done", 4)]
    assert waited < 15, f"tenant B waited {waited:.1f} s"
    assert all(repo.get_job(service.engine, j).status in repo.ACTIVE for j in stuck)
    assert hanging.open >= 4  # tenant A kept its share: half of each process's threads
    print(f"tenant B's two jobs done {waited:.2f} s after they were sent")


# ---------------------------------------------------------------- sending a job's batches

def _queued_ranges(service: Service) -> list[tuple[str, int, int]]:
    """The (job, start, end) of every task message in the lanes, oldest first."""
    import base64
    import json

    import redis

    from worker import lanes

    client = redis.Redis.from_url(service.redis.url)
    found = []
    for queue in lanes.all_queues("pjudge"):
        for raw in reversed(client.lrange(queue, 0, -1)):  # LPUSH: the oldest is last
            args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
            found.append((args[0], args[1], args[2]))
    return found


@pytest.mark.parametrize("batch_publishing", [True, False])
def test_a_jobs_batches_go_to_its_lane_in_order_in_one_pipeline_or_one_by_one(
        sqlite_service: Service, monkeypatch: pytest.MonkeyPatch, batch_publishing: bool) -> None:
    from kombu.transport import redis as kombu_redis

    from judge.profiles import load_profile
    from worker.tasks import enqueue_job, requeue_missing

    service = sqlite_service
    flushes: list[int] = []
    flush = kombu_redis.PublishBatch.flush

    def counted(self: kombu_redis.PublishBatch) -> None:
        flushes.append(self._buffered)
        if not batch_publishing:
            raise kombu_redis.BatchPublishError("the pipeline failed")  # delivery uncertain
        flush(self)

    monkeypatch.setattr(kombu_redis.PublishBatch, "flush", counted)
    profile = load_profile("persona-certainty", provider="openai-compatible", model="m", base_url="http://127.0.0.1:9/v1")
    job = repo.create_job(service.engine, "owner-a", many_items(100), profile, batch_size=8).job
    assert enqueue_job(job, service.celery()) == 13
    expected = [(job.id, start, min(start + 8, 100)) for start in range(0, 100, 8)]
    assert _queued_ranges(service) == expected
    assert flushes == [13]  # thirteen LPUSHes, one round trip (or, failing, each sent on its own)
    assert requeue_missing(service.engine, job, service.celery()) == 13  # nothing judged: all again
    assert _queued_ranges(service) == expected * 2
