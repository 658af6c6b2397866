"""What one worker process keeps and spends, whatever its tenants send (issue 12, attacker
review): a bounded set of judges (each with its provider client and connections), and the daily
cost quota enforced while jobs run, not only when they are posted."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from judge.endpoints import local_access
from judge.runner import Judge
from tests.test_service_worker import many_items, sim_profile
from worker.runtime import AsyncRuntime


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue  # closed meanwhile
    return count


def settle(condition: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ---------------------------------------------------------------- judges kept per worker (F9)

def test_the_worker_keeps_at_most_max_judges_and_closes_the_least_recently_used_idle_ones(
        start_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = start_sim()
    closed: list[Judge] = []
    real_aclose = Judge.aclose

    async def recording_aclose(self: Judge) -> None:
        closed.append(self)
        await real_aclose(self)

    monkeypatch.setattr(Judge, "aclose", recording_aclose)
    runtime = AsyncRuntime(max_judges=2)
    profiles = [sim_profile(sim, temperature=0.1 * (i + 1)) for i in range(5)]
    judges = []
    for profile in profiles[:3]:
        with runtime.judge(profile, local_access(profile)) as judge:
            judges.append(judge)
    assert settle(lambda: closed == [judges[0]])  # the least recently used one, once a third came
    assert len(runtime) == 2
    with runtime.judge(profiles[1], local_access(profiles[1])) as again:
        assert again is judges[1]  # kept, and now the most recently used
    with runtime.judge(profiles[3], local_access(profiles[3])) as judge:
        judges.append(judge)
    assert settle(lambda: closed == [judges[0], judges[2]])


def test_a_judge_a_running_batch_holds_is_closed_only_when_the_batch_lets_go(
        start_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = start_sim()
    closed: list[Judge] = []
    real_aclose = Judge.aclose

    async def recording_aclose(self: Judge) -> None:
        closed.append(self)
        await real_aclose(self)

    monkeypatch.setattr(Judge, "aclose", recording_aclose)
    runtime = AsyncRuntime(max_judges=1)
    first, *others = [sim_profile(sim, temperature=0.1 * (i + 1)) for i in range(4)]
    item = many_items(1)[0]
    with runtime.judge(first, local_access(first)) as held:
        for profile in others:  # other batches come and go meanwhile
            with runtime.judge(profile, local_access(profile)) as judge:
                assert runtime.run(judge.judge_item(item)).error is None
        time.sleep(0.2)
        assert held not in closed
        assert runtime.run(held.judge_item(item)).error is None  # still usable: never closed under a batch
    # The others were dropped (none of them in use any more); the one the batch held is the one kept.
    assert settle(lambda: len(closed) == 3) and held not in closed and len(runtime) == 1
    with runtime.judge(first, local_access(first)) as again:
        assert again is held
    with runtime.judge(others[0], local_access(others[0])):
        pass
    assert settle(lambda: held in closed) and len(runtime) == 1


def test_judging_with_many_distinct_profiles_does_not_keep_a_connection_pool_for_each(start_sim: Any) -> None:
    # 150 one-item jobs with different temperatures opened 146 sockets that were never closed.
    sim = start_sim()
    item = many_items(1)[0]

    def sockets_after(runtime: AsyncRuntime, profiles: int, wait: bool) -> int:
        before = open_sockets()
        for i in range(profiles):
            profile = sim_profile(sim, temperature=round(0.01 * (i + 1), 2))
            with runtime.judge(profile, local_access(profile)) as judge:
                assert runtime.run(judge.judge_item(item)).error is None
        if wait:  # the evicted judges are closed on the event loop, just after
            settle(lambda: open_sockets() - before <= 4, timeout=5)
        return open_sockets() - before

    unbounded = sockets_after(AsyncRuntime(max_judges=1000), 24, wait=False)
    bounded = sockets_after(AsyncRuntime(max_judges=2), 24, wait=True)
    assert unbounded >= 24  # what the cap is for: each kept judge keeps its connections
    assert bounded <= 4, bounded
