"""A cascade through the workers against real parts (Redis, worker processes, SQLite and
PostgreSQL, three `pjudge llm-sim` servers): stage by stage in one task, and a worker killed with
SIGKILL while stage 2 runs loses nothing, duplicates nothing and re-asks no stage-1 answer."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from judge.profiles import CascadeProfile, load_judging
from store import repo
from store.models import CallRow
from tests.support.services import (
    Service,
    many_items,
)

THRESHOLDS = (0.9, 0.85, 0.8)


def sim_cascade(sims: list[Any]) -> CascadeProfile:
    cascade = load_judging({"name": "sim-three", "cascade": [
        {"profile": {"profile": "persona-certainty", "name": f"sim-{size}", "provider": "openai-compatible",
                     "model": f"sim-{size}", "base_url": sim.openai_base_url,
                     "price": {"input_per_mtok": price, "output_per_mtok": price}},
         "threshold": threshold}
        for sim, size, price, threshold in zip(sims, ("small", "medium", "large"), (0.1, 1.0, 10.0), THRESHOLDS,
                                               strict=True)]})
    assert isinstance(cascade, CascadeProfile)
    return cascade


def duplicated_calls(service: Service, job_id: str) -> list[Any]:
    with service.engine.connect() as conn:
        return list(conn.execute(
            select(CallRow.item_id, CallRow.stage, CallRow.order, CallRow.sample, func.count())
            .where(CallRow.job_id == job_id)
            .group_by(CallRow.item_id, CallRow.stage, CallRow.order, CallRow.sample)
            .having(func.count() > 1)).all())


def test_kill_9_while_stage_2_runs_loses_and_duplicates_nothing_and_asks_stage_1_once(
        service: Service, start_sim: Any) -> None:
    # Stage 1 cheap and noisy, stage 2 slow (the kill lands while its calls are out), stage 3 clean.
    sims = [start_sim("--noise", "0.3", "--seed", "1"), start_sim("--noise", "0.15", "--latency-ms", "4000",
                                                                  "--seed", "2"),
            start_sim("--seed", "3")]
    n = 300
    items = many_items(n, seed=5)
    # The message comes back after the visibility timeout; no sweep re-sends it meanwhile (a second
    # copy would be harmless, but would ask stage 3 twice and blur the counts below).
    service.env["PJUDGE_SWEEP_AFTER"] = "600"
    first = service.start_worker(concurrency=2)
    job_id = service.submit(items, sim_cascade(sims), batch_size=n)  # one task: stage 2 starts after stage 1
    deadline = time.monotonic() + 120
    while sims[1].stats()["requests"] == 0:
        assert time.monotonic() < deadline, first.output()[-3000:]
        time.sleep(0.05)
    asked_stage_1 = sims[0].stats()["requests"]
    assert asked_stage_1 == 2 * n  # stage 1 is over (and its answers flushed) before stage 2 asks
    first.kill9()
    assert repo.get_job(service.engine, job_id).n_verdicts == 0  # type: ignore[union-attr]

    service.start_worker(concurrency=2)
    job = service.wait_done(job_id, 150)
    assert (job.status, job.n_verdicts) == ("done", n)
    verdicts = repo.all_verdicts(service.engine, job_id)
    assert len({v.id for v in verdicts}) == n
    assert duplicated_calls(service, job_id) == []
    judged = [len(v.stages or []) for v in verdicts]
    assert service.row_counts(job_id) == {"verdicts": n, "distinct_verdicts": n, "calls": 2 * sum(judged)}
    assert job.n_calls == 2 * sum(judged)

    # Stage 1 was asked once per call: the redelivered task read its answers from the call cache.
    assert sims[0].stats()["requests"] == 2 * n
    stage_1_calls = [c for v in verdicts for c in v.calls if c.stage == 0]
    assert len(stage_1_calls) == 2 * n and all(c.cached for c in stage_1_calls if c.error is None)
    reached = [sum(j > k for j in judged) for k in range(3)]
    assert reached[0] == n and 0 < reached[2] < reached[1] < n
    assert sims[1].stats()["requests"] >= 2 * reached[1]  # re-asked: its answers were in flight at the kill
    assert sims[2].stats()["requests"] == 2 * reached[2]

    # The verdicts as SPEC 2.1: the accepting stage's, or escalated with the last stage's.
    for verdict in verdicts:
        assert verdict.stages is not None and {c.stage for c in verdict.calls} == set(range(len(verdict.stages)))
        if verdict.stage is None:
            assert verdict.abstained and len(verdict.stages) == 3
        else:
            assert not verdict.abstained and verdict.stage == len(verdict.stages) - 1
            assert verdict.winner in ("A", "B") and max(verdict.p_a, 1 - verdict.p_a) >= THRESHOLDS[verdict.stage]
    print(f"reached per stage {reached}; sim requests {[s.stats()['requests'] for s in sims]}")


def test_a_cancelled_cascade_stops_in_stage_2_and_the_worker_takes_the_next_job(
        sqlite_service: Service, start_sim: Any) -> None:
    service = sqlite_service
    sims = [start_sim("--noise", "0.3", "--seed", "4"), start_sim("--latency-ms", "30000", "--seed", "5"),
            start_sim("--seed", "6")]
    worker = service.start_worker(concurrency=1)
    job_id = service.submit(many_items(100, seed=6), sim_cascade(sims), batch_size=100)
    deadline = time.monotonic() + 120
    while sims[1].stats()["requests"] == 0:
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.05)
    assert repo.cancel_job(service.engine, job_id)
    # The one thread is free again within seconds (not after stage 2's 30 s answers): the next job runs.
    started = time.monotonic()
    single = load_judging({"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-small",
                           "base_url": sims[2].openai_base_url})
    other = service.wait_done(service.submit(many_items(10, seed=7), single), 25)
    assert other.status == "done" and time.monotonic() - started < 25
    assert repo.get_job(service.engine, job_id).status == "cancelled"  # type: ignore[union-attr]
    assert service.row_counts(job_id) == {"verdicts": 0, "distinct_verdicts": 0, "calls": 0}
    assert sims[2].stats()["requests"] == 20  # the other job's: the cancelled one never reached stage 3
    assert "its job is no longer active" in worker.output()
