"""Fairness and bounds between tenants (issue 12, finding 5): a total deadline per call, cancel
stops in-flight calls, tenants take turns, a hanging endpoint holds only its tenant's share, and
SIGTERM ends a worker whose calls hang. Real Redis, worker processes, SQLite and the simulator;
the scheduling rules themselves also in-process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from judge.profiles import JudgeProfile, load_profile
from judge.settings import reset_settings
from store import repo
from store.db import get_engine
from tests.support.services import HangingServer, RedisServer, Service, many_items, sim_profile
from worker.batches import CANCELLED, PREEMPTED, Running


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    server = HangingServer().start()
    yield server
    server.stop()


@pytest.fixture
def service(sqlite_service: Service) -> Service:
    # SQLite only: what is measured here is scheduling, which is the same on PostgreSQL
    # (repo.job_statuses, the one new query, is tested on both below).
    return sqlite_service


def hanging_profile(server: HangingServer, **overrides: Any) -> JudgeProfile:
    # The profile's own timeout and retries as a client would leave them (120 s, 6 retries).
    return load_profile("persona-certainty", provider="openai-compatible", model="hanging",
                        base_url=server.base_url, **overrides)


def wait_for(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def worker_ready(service: Service, index: int = -1) -> None:
    wait_for(lambda: "pjudge worker ready" in service.workers[index].output(), 120, "worker ready")


# ---------------------------------------------------------------- the call deadline

@pytest.mark.parametrize("transport", ["sdk", "direct"])
def test_a_call_to_an_endpoint_that_never_answers_ends_at_the_call_deadline(
        hanging: HangingServer, monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    from judge.runner import Judge

    monkeypatch.setenv("PJUDGE_CALL_DEADLINE_S", "1")
    reset_settings()
    profile = hanging_profile(hanging, timeout_s=60, max_retries=3, transport=transport)
    item = many_items(1)[0]

    async def judge_one() -> Any:
        async with Judge(profile) as judge:
            return await asyncio.wait_for(judge.judge_item(item), 20)

    started = time.monotonic()
    verdict = asyncio.run(judge_one())
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    assert verdict.winner is None and len(verdict.calls) == 2
    assert all(c.error is not None and c.error.startswith("provider: ") and "deadline (1 s" in c.error
               for c in verdict.calls)


# ---------------------------------------------------------------- a batch that exhausts its retries

def test_a_batch_that_exhausts_its_retries_logs_its_traceback_with_job_and_batch_but_no_secret(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-provider-" + "hidden" * 4
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:9/0"))  # never reached
    reset_settings()
    from worker.tasks import MAX_TASK_RETRIES, judge_batch

    engine = get_engine()
    # An internal failure: the job's template is gone from the server by the time a worker runs it
    # (its name carries the key, to see that the log does not).
    profile = JudgeProfile(provider="openai-compatible", model="m", base_url="http://127.0.0.1:9/v1",
                           template=f"removed-{secret}")
    job = repo.create_job(engine, "owner-1", many_items(3), profile, batch_size=2).job
    with caplog.at_level(logging.INFO, logger="pjudge.worker"):
        judge_batch.apply(args=(job.id, 0, 2), retries=MAX_TASK_RETRIES)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "pjudge.worker"]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    message = errors[0].getMessage()
    assert f"{job.id}[0:2]" in message and "Traceback (most recent call last)" in message
    assert "TemplateError" in message and "unknown template" in message
    assert secret not in caplog.text and "***" in message
    stored = repo.all_verdicts(engine, job.id)
    assert [v.error for v in stored] == ["internal: TemplateError"] * 2


# ---------------------------------------------------------------- the scheduling rules, in-process

def test_a_tenant_alone_uses_every_thread_and_is_never_handed_back() -> None:
    running = Running()
    running.configure(4, 0.5, waiting_now=lambda: {"a"})  # only its own batches wait
    entered = [running.enter(f"j{i}", "a", f"j{i}[0:1]") for i in range(4)]
    assert all(e is not None for e in entered)
    assert running.preempt({"a"}, now=time.monotonic() + 60) == 0


def test_a_tenant_at_its_share_hands_back_a_batch_while_another_tenant_waits() -> None:
    running = Running()
    running.configure(4, 0.5, waiting_now=lambda: {"a", "b"})
    assert running.enter("j1", "a", "x") is not None and running.enter("j2", "a", "y") is not None
    assert running.enter("j3", "a", "z") is None  # at its share (2 of 4), and b waits
    assert running.enter("k1", "b", "w") is not None  # b is below its share


def test_two_tenants_at_their_share_do_not_hand_batches_to_each_other() -> None:
    running = Running()
    running.configure(8, 0.25, waiting_now=lambda: {"a", "b"})
    for owner in "ab":
        for i in range(2):
            assert running.enter(f"{owner}{i}", owner, "x") is not None
    # Both at their share: neither would use a thread the other freed, so both run.
    assert running.enter("a9", "a", "x") is not None and running.enter("b9", "b", "x") is not None


def test_preemption_stops_the_oldest_batch_of_the_tenant_above_its_share_after_a_while() -> None:
    running = Running()
    running.configure(4, 0.5)
    keys = {}
    for i in range(4):
        key, batch = running.enter(f"a{i}", "a", f"a{i}")  # type: ignore[misc]
        batch.started = 100.0 + i
        keys[i] = batch
    assert running.preempt({"b"}, now=101.0) == 0  # the oldest has run 1 s only: wait for it to end
    assert running.preempt({"b"}, now=110.0) == 1
    assert [b.reason for b in keys.values()] == [PREEMPTED, None, None, None]
    assert running.preempt({"b"}, now=110.0) == 0  # one thread for the one waiting tenant
    assert running.preempt({"b", "c"}, now=110.0) == 1  # a second one waits: a is still above 4 // 3
    assert running.preempt({"b", "c"}, now=110.0) == 0  # a is down to a thread per waiting tenant
    assert running.preempt({"b", "c", "d"}, now=110.0) == 1  # four tenants, four threads: one each
    assert running.preempt({"b", "c", "d"}, now=110.0) == 0
    assert running.counts() == {"a": 1}


def hold(running: Running, owners: Any, started: float = 100.0) -> list[Any]:
    """Enter one batch per owner in `owners` (as a worker whose threads they fill)."""
    batches = []
    for i, owner in enumerate(owners):
        entered = running.enter(f"{owner}{i}", owner, f"{owner}{i}")
        assert entered is not None
        entered[1].started = started + i * 0.01
        batches.append(entered[1])
    return batches


def test_a_third_tenant_with_nothing_running_takes_a_thread_from_two_tenants_at_their_share() -> None:
    running = Running()
    running.configure(2, 0.5)
    batches = hold(running, "ab")
    assert running.preempt({"a", "b", "c"}, now=101.0) == 0  # nothing has run its minimum time yet
    assert running.preempt({"a", "b", "c"}, now=110.0) == 1
    assert [b.reason for b in batches] == [PREEMPTED, None]  # the oldest of the holders
    assert running.preempt({"a", "b", "c"}, now=110.0) == 0  # one thread for the one waiting tenant


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("holders", [1, 2, 3, 5, 9])
def test_a_waiting_tenant_with_nothing_running_gets_a_thread_whatever_the_threads_and_tenants(
        threads: int, holders: int) -> None:
    running = Running()
    tenants = [f"t{i}" for i in range(holders)]
    waiting: set[str] = set()
    running.configure(threads, 0.5, waiting_now=lambda: waiting)
    # The holders' batches fill every thread, as evenly as they can; then each has more queued.
    batches = hold(running, [tenants[i % holders] for i in range(threads)], started=time.monotonic() - 10)
    waiting.update({*tenants, "new"})
    # One thread for each tenant with nothing running (holders beyond the threads wait too).
    expected = min(threads, 1 + max(0, holders - threads))
    assert running.preempt(waiting) == expected
    victims = [b for b in batches if b.reason == PREEMPTED]
    victim = victims[0]
    # Its thread unwinds; a message of the tenant just stopped comes first: it goes back (it had
    # its turn, or holds its share), and the next one, of the tenant with nothing running, runs.
    running.leave(batches.index(victim))
    assert running.enter("again", victim.owner, "again") is None
    new = running.enter("n", "new", "n")
    assert new is not None
    assert sum(running.counts().values()) == threads - len(victims) + 1 and running.counts()["new"] == 1
    # The batch that has just started keeps its thread (tenants may take turns, not in a blink).
    running.preempt(waiting)
    assert new[1].reason is None


@pytest.mark.parametrize(("threads", "owners"), [(2, "ab"), (4, "aabb"), (3, "abc"), (8, "aaaabbbb"),
                                                 (3, "aab"), (7, "aaaabbb")])
def test_tenants_at_equal_shares_keep_their_threads_while_all_of_them_wait(threads: int, owners: str) -> None:
    running = Running()
    waiting: set[str] = set()
    running.configure(threads, 0.5, waiting_now=lambda: waiting)
    hold(running, owners)
    waiting.update(owners)
    for now in (110.0, 200.0, 1000.0):
        assert running.preempt(waiting, now=now) == 0
    # A thread that frees goes to whichever of them comes next: nobody hands its batch back.
    running.leave(0)
    assert running.enter("x", owners[0], "x") is not None


def test_a_cancelled_jobs_batches_are_stopped() -> None:
    running = Running()
    running.enter("j1", "a", "j1")
    running.enter("j2", "a", "j2")
    assert running.stop_cancelled({"j1": "cancelled", "j2": "running"}, repo.ACTIVE) == 1
    assert [b.reason for b in running.snapshot()] == [CANCELLED, None]
    assert running.stop_cancelled({}, repo.ACTIVE) == 1  # a job that is gone


def test_job_statuses_reads_many_jobs_in_one_query(engine: Any) -> None:
    profile = JudgeProfile(provider="replay", replay_path="x")
    first = repo.create_job(engine, "o", many_items(1), profile).job
    second = repo.create_job(engine, "o", many_items(1), profile).job
    repo.cancel_job(engine, second.id)
    assert repo.job_statuses(engine, [first.id, second.id, "nope"]) == {first.id: "queued", second.id: "cancelled"}
    assert repo.job_statuses(engine, []) == {}


def test_lanes_give_each_tenant_with_queued_work_its_own_lane(redis_server: RedisServer) -> None:
    import redis

    from worker.lanes import assign_lane, waiting_owners

    client = redis.Redis.from_url(redis_server.url)
    a, b = assign_lane(client, "a", count=3), assign_lane(client, "b", count=3)
    assert a != b and assign_lane(client, "a", count=3) == a  # an owner keeps its lane
    client.lpush(a, "m1")
    client.lpush(b, "m2")
    assert waiting_owners(client, "pjudge", count=3) == {"a", "b"}
    c = assign_lane(client, "c", count=3)
    assert c not in (a, b)
    client.lpush(c, "m3")
    assert assign_lane(client, "d", count=3) in (a, b, c)  # no lane left: one is shared, none refused
    client.lpush("pjudge", "m4")
    assert waiting_owners(client, "pjudge", count=3) == {"a", "b", "c", "?"}


# ---------------------------------------------------------------- through Redis and worker processes

def test_a_tenant_whose_endpoint_hangs_does_not_stall_another_tenants_job(
        service: Service, start_sim: Any, hanging: HangingServer) -> None:
    sim = start_sim()
    service.start_worker(concurrency=2)
    worker_ready(service)
    # Tenant A: two one-item jobs and a larger one against an endpoint that never answers.
    stuck = [service.submit(many_items(1, seed=s), hanging_profile(hanging), owner="tenant-a") for s in (1, 2)]
    stuck.append(service.submit(many_items(64, seed=3), hanging_profile(hanging), owner="tenant-a"))
    wait_for(lambda: hanging.open >= 4, 60, "both threads on the hanging endpoint")
    time.sleep(1)
    posted = time.monotonic()
    job_id = service.submit(many_items(1, seed=4), sim_profile(sim), owner="tenant-b")
    job = service.wait_done(job_id, 30)
    waited = time.monotonic() - posted
    assert (job.status, job.n_verdicts) == ("done", 1)
    assert waited < 10, f"tenant B waited {waited:.1f} s"
    assert all(repo.get_job(service.engine, j).status in repo.ACTIVE for j in stuck)
    print(f"tenant B's one-item job done {waited:.2f} s after it was sent")


def test_cancelling_a_job_stops_its_hanging_calls_and_frees_the_threads_within_seconds(
        service: Service, start_sim: Any, hanging: HangingServer) -> None:
    sim = start_sim()
    service.start_worker(concurrency=2)
    worker_ready(service)
    stuck = [service.submit(many_items(1, seed=s), hanging_profile(hanging), owner="tenant-a") for s in (1, 2)]
    wait_for(lambda: hanging.open >= 4, 60, "both jobs' calls on the hanging endpoint")
    cancelled = time.monotonic()
    for job_id in stuck:
        assert repo.cancel_job(service.engine, job_id)
    closed = wait_for(lambda: hanging.open == 0, 30, "the cancelled jobs' connections closed")
    # The same tenant's next job runs at once: the threads are free.
    job = service.wait_done(service.submit(many_items(1, seed=3), sim_profile(sim), owner="tenant-a"), 30)
    freed = time.monotonic() - cancelled
    assert job.status == "done"
    assert closed < 5 and freed < 10, (closed, freed)
    assert all(service.row_counts(j)["verdicts"] == 0 for j in stuck)  # a cancelled batch stores nothing
    print(f"calls stopped {closed:.2f} s after the cancel; next job done after {freed:.2f} s")


def test_a_one_item_job_is_not_queued_behind_another_tenants_2000_item_job(
        service: Service, start_sim: Any) -> None:
    sim = start_sim("--latency-ms", "400", "--seed", "5")
    service.start_worker(concurrency=2)
    worker_ready(service)
    big = service.submit(many_items(2000, seed=6), sim_profile(sim), owner="tenant-a")
    service.wait_verdicts(big, 16, timeout=60)
    posted = time.monotonic()
    small = service.wait_done(service.submit(many_items(1, seed=7), sim_profile(sim), owner="tenant-b"), 120)
    waited = time.monotonic() - posted
    big_job = repo.get_job(service.engine, big)
    assert small.status == "done"
    assert big_job.status == "running" and big_job.n_verdicts < 1000, big_job
    assert waited < 6, f"the one-item job waited {waited:.1f} s"
    print(f"one-item job done {waited:.2f} s after it was sent; the big job had {big_job.n_verdicts} verdicts")


def test_sigterm_stops_a_worker_whose_calls_hang_within_seconds_and_its_batch_goes_back_to_the_queue(
        service: Service, hanging: HangingServer) -> None:
    import redis

    from worker import lanes

    service.env["PJUDGE_SHUTDOWN_GRACE_S"] = "1"
    worker = service.start_worker(concurrency=2)
    worker_ready(service)
    job_id = service.submit(many_items(1), hanging_profile(hanging), owner="tenant-a")
    wait_for(lambda: hanging.open >= 2, 60, "the job's calls on the hanging endpoint")
    assert worker.proc is not None
    started = time.monotonic()
    os.killpg(worker.proc.pid, signal.SIGTERM)
    try:
        code = worker.proc.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill9()
        raise AssertionError(f"the worker was still in warm shutdown after 30 s:\n{worker.output()[-3000:]}") from None
    elapsed = time.monotonic() - started
    assert elapsed < 10 and code == 0, (elapsed, code)
    assert hanging.open == 0
    client = redis.Redis.from_url(service.redis.url)
    assert lanes.backlog(client, "pjudge") == 1  # handed back, not lost (nor acknowledged)
    assert repo.get_job(service.engine, job_id).status in repo.ACTIVE
    print(f"worker stopped {elapsed:.2f} s after SIGTERM")


def test_two_tenants_whose_endpoints_hang_do_not_starve_a_third_tenant_on_a_two_thread_worker(
        service: Service, start_sim: Any) -> None:
    # Each of A and B at its share (one thread of two) would keep it for the whole call deadline:
    # C, with nothing running, takes a thread from one of them within seconds.
    sim = start_sim()
    servers = {"tenant-a": HangingServer().start(), "tenant-b": HangingServer().start()}
    try:
        service.start_worker(concurrency=2)
        worker_ready(service)
        stuck = [service.submit(many_items(40, seed=10 + i), hanging_profile(server), owner=owner)
                 for i, (owner, server) in enumerate(servers.items())]
        wait_for(lambda: all(s.open >= 2 for s in servers.values()), 60, "A and B each on one thread")
        time.sleep(3)  # both batches past the minimum run time
        posted = time.monotonic()
        job = service.wait_done(service.submit(many_items(10, seed=20), sim_profile(sim), owner="tenant-c"), 40)
        waited = time.monotonic() - posted
        assert (job.status, job.n_verdicts) == ("done", 10)
        assert waited < 10, f"tenant C waited {waited:.1f} s"
        assert all(repo.get_job(service.engine, j).status in repo.ACTIVE for j in stuck)
        # Then A and B hold one thread each again and keep it: no batch goes back and forth.
        wait_for(lambda: all(s.open >= 2 for s in servers.values()), 30, "A and B each on one thread again")
        time.sleep(3)
        accepted = {owner: s.accepted for owner, s in servers.items()}
        time.sleep(5)
        assert {owner: s.accepted for owner, s in servers.items()} == accepted
        assert all(s.open >= 2 for s in servers.values())
        print(f"tenant C's 10-item job done {waited:.2f} s after it was sent")
    finally:
        for server in servers.values():
            server.stop()
