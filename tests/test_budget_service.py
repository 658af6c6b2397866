"""A job with max_cost_usd against real parts (Redis, worker processes, SQLite and PostgreSQL, the
simulated LLM): it stops within one batch of calls of its budget, ends `budget_exhausted`, and
what it judged is kept, reported and billed to the cent."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from store import repo
from store.models import BudgetReservation, CallRow
from store.stats import Selection, report
from tests.support.services import (
    Service,
    many_items,
    sim_profile,
)

BATCH = 16


def test_a_budget_stops_the_job_within_one_batch_of_calls(service: Service, start_sim) -> None:
    from worker.tasks import enqueue_job

    sim = start_sim("--latency-ms", "40", "--seed", "5")
    service.start_worker(concurrency=4)
    service.start_worker(concurrency=4)
    profile = sim_profile(sim)
    items = many_items(480)
    budget_usd = 0.25
    job = repo.create_job(service.engine, "budget-owner", items, profile, batch_size=BATCH,
                          max_cost_usd=budget_usd).job
    enqueue_job(job, service.celery())
    done = service.wait_done(job.id, 180)

    assert done.status == "budget_exhausted" and done.finished_at is not None
    assert 0 < done.n_verdicts < done.n_items
    with service.engine.connect() as conn:
        calls_usd, calls = conn.execute(select(func.sum(CallRow.cost_usd), func.count())
                                        .where(CallRow.job_id == job.id)).one()
        held = conn.execute(select(func.count()).select_from(BudgetReservation)
                            .where(BudgetReservation.job_id == job.id)).scalar_one()
    assert held == 0
    # Billed to the cent: the job's cost is its calls', and so is its report's.
    assert round(done.cost_usd, 2) == round(calls_usd, 2) and done.cost_usd == pytest.approx(calls_usd, abs=1e-9)
    cost = report(service.engine, Selection(job_id=job.id))["cost"]  # type: ignore[index]
    assert cost["cost_usd"] == pytest.approx(calls_usd, abs=1e-9) and cost["items"] == done.n_verdicts
    assert calls == done.n_calls == 2 * done.n_verdicts

    # Within one batch: what passed the budget costs less than one batch of calls.
    per_call = calls_usd / calls
    over_usd = done.cost_usd - budget_usd
    over_calls = math.ceil(max(0.0, over_usd) / per_call)
    print(f"\n{(done.finished_at - done.created_at).total_seconds():.1f} s; budget {budget_usd} USD: spent {done.cost_usd:.6f} USD in {calls} calls ({done.n_verdicts} of "
          f"{done.n_items} items); over by {over_usd:.6f} USD = {over_calls} calls (a batch: {2 * BATCH} calls, "
          f"{2 * BATCH * per_call:.6f} USD)")
    assert done.cost_usd >= budget_usd  # it ran until the budget was reached, not short of it
    assert over_calls <= 2 * BATCH
