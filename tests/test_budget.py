"""Estimates over HTTP (POST /v1/jobs/estimate), job budgets (max_cost_usd, store.budget) and the
cost sections of the reports: validated like POST /v1/jobs, admitted batch by batch, ended
`budget_exhausted`, and a job's cost equal to its calls' to the cent."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from judge.estimate import estimate
from judge.profiles import load_profile
from judge.records import PairItem
from store import budget, repo
from store.models import BudgetReservation, CallRow, Job
from tests.support.api import AUTH_A, count, error_of, judge_all, make_items, new_app, post_job

# ---------------------------------------------------------------- POST /v1/jobs/estimate

def test_estimate_over_http_is_the_library_estimate_at_the_server_price(client: FlaskClient, engine: Engine) -> None:
    items = make_items(12)
    response = client.post("/v1/jobs/estimate", json={"items": items, "profile": "faireval-scores"}, headers=AUTH_A)
    assert response.status_code == 200, response.get_json()
    got = response.get_json()
    want = estimate(load_profile("faireval-scores"), [PairItem.model_validate(i) for i in items]).document()
    assert {k: got[k] for k in ("calls", "input_tokens", "output_tokens", "counted_by")} == {
        k: want[k] for k in ("calls", "input_tokens", "output_tokens", "counted_by")}
    assert got["calls"] == 12 * 2 * 3 and got["output_tokens"] == got["calls"] * load_profile("faireval-scores").max_tokens
    assert got["cost_usd"] == want["cost_usd"] > 0 and got["notes"]
    assert count(engine, Job) == 0  # nothing stored


@pytest.mark.parametrize(("body", "field"), [
    ({"items": []}, "items"),
    ({"items": [{"id": "x", "prompt": "p", "response_a": "a"}]}, "items[0].response_b"),
    ({"items": "ITEMS", "profile": "persona-certainty"}, "items"),
    ({"items": None, "max_cost_usd": 3}, "max_cost_usd"),  # not a field of an estimate
    ({"items": [{"id": "x", "prompt": "p", "response_a": "a", "response_b": "b"}], "profile": {"samples": 99}},
     "profile.samples"),
    ({"items": [{"id": "x", "prompt": "p", "response_a": "a", "response_b": "b"}], "profile": "../etc"}, "profile"),
])
def test_estimate_refuses_what_post_jobs_refuses_with_field_paths(client: FlaskClient, body: dict[str, Any],
                                                                  field: str) -> None:
    response = client.post("/v1/jobs/estimate", json=body, headers=AUTH_A)
    assert response.status_code == 422, response.get_json()
    assert field in [d["field"] for d in error_of(response)["details"]]


def test_estimate_needs_a_key_and_a_json_object(client: FlaskClient) -> None:
    assert client.post("/v1/jobs/estimate", json={"items": make_items(1)}).status_code == 401
    response = client.post("/v1/jobs/estimate", json=[1, 2], headers=AUTH_A)
    assert response.status_code == 422 and error_of(response)["code"]


def test_estimate_is_bounded_like_a_job(engine: Engine, enqueued: list[Any]) -> None:
    client = new_app(engine, enqueued.append, PJUDGE_MAX_JOB_MB="0.01").test_client()
    response = client.post("/v1/jobs/estimate", json={"items": make_items(200)}, headers=AUTH_A)
    assert response.status_code == 422 and error_of(response)["code"] == "job_too_large"


# ---------------------------------------------------------------- max_cost_usd on POST /v1/jobs

@pytest.mark.parametrize("value", [0, -1, "5", True, [1]])
def test_max_cost_must_be_a_positive_number(client: FlaskClient, value: Any) -> None:
    response = post_job(client, make_items(3), max_cost_usd=value)
    assert response.status_code == 422
    assert [d["field"] for d in error_of(response)["details"]] == ["max_cost_usd"]


def test_job_shows_its_budget_and_the_same_key_with_another_budget_is_a_conflict(client: FlaskClient) -> None:
    items = make_items(3)
    headers = {**AUTH_A, "Idempotency-Key": "budget-1"}
    created = post_job(client, items, headers, max_cost_usd=0.25)
    assert created.status_code == 202
    job_id = created.get_json()["job_id"]
    shown = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    assert shown["max_cost_usd"] == 0.25 and shown["status"] == "queued"
    assert post_job(client, items, headers, max_cost_usd=0.25).status_code == 200
    assert post_job(client, items, headers, max_cost_usd=0.5).status_code == 409
    unbudgeted = post_job(client, items).get_json()["job_id"]
    assert client.get(f"/v1/jobs/{unbudgeted}", headers=AUTH_A).get_json()["max_cost_usd"] is None


# ---------------------------------------------------------------- store.budget

def _job(engine: Engine, n: int = 64, max_cost: float | None = 1.0) -> Job:
    items = [PairItem.model_validate(i) for i in make_items(n)]
    return repo.create_job(engine, "owner", items, load_profile("persona-certainty"), batch_size=16,
                           max_cost_usd=max_cost).job


def _spend(engine: Engine, job_id: str, usd: float) -> None:
    with engine.begin() as conn:
        conn.execute(Job.__table__.update().where(Job.id == job_id).values(cost_usd=usd))


def test_batches_start_while_spent_and_held_stay_under_the_budget(engine: Engine) -> None:
    job = _job(engine)
    assert budget.admit(engine, job.id, 0, 0.7) == budget.ADMITTED
    assert budget.admit(engine, job.id, 16, 0.7) == budget.ADMITTED  # held 0.7 < 1: one batch may overshoot
    assert budget.admit(engine, job.id, 32, 0.1) == budget.WAIT  # held 1.4 >= 1: wait for the running ones
    assert budget.admit(engine, job.id, 0, 0.7) == budget.ADMITTED  # a redelivery replaces its own reservation
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(BudgetReservation)).scalar_one() == 2
    _spend(engine, job.id, 0.5)
    assert not budget.settle(engine, job.id, 0)  # spent < budget: the job goes on
    assert budget.admit(engine, job.id, 32, 0.1) == budget.WAIT  # 0.5 spent + 0.7 held >= 1
    _spend(engine, job.id, 1.2)
    assert budget.admit(engine, job.id, 32, 0.1) == budget.EXHAUSTED
    assert repo.get_job(engine, job.id).status == "queued"  # type: ignore[union-attr]  # batch 16 still runs
    assert budget.settle(engine, job.id, 16)  # the last one running: the job ends
    job_now = repo.get_job(engine, job.id)
    assert job_now is not None and job_now.status == "budget_exhausted" and job_now.finished_at is not None
    assert budget.admit(engine, job.id, 48, 0.1) == budget.INACTIVE
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(BudgetReservation)).scalar_one() == 0


def test_a_job_whose_last_verdicts_land_on_the_budget_is_done(engine: Engine) -> None:
    job = _job(engine, n=16, max_cost=0.001)
    assert budget.admit(engine, job.id, 0, 1.0) == budget.ADMITTED
    judge_all(engine, job.id)  # 16 verdicts of 2 calls at 0.0005: 0.016 USD, past the budget
    assert not budget.settle(engine, job.id, 0)
    assert repo.get_job(engine, job.id).status == "done"  # type: ignore[union-attr]  # every item has its verdict


def test_job_cost_equals_its_calls_costs_in_the_database_and_the_report(engine: Engine, client: FlaskClient) -> None:
    job_id = post_job(client, make_items(90)).get_json()["job_id"]
    judge_all(engine, job_id)
    with engine.connect() as conn:
        calls = conn.execute(select(func.sum(CallRow.cost_usd)).where(CallRow.job_id == job_id)).scalar_one()
    shown = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    report = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    assert round(shown["cost_usd"], 2) == round(calls, 2) == round(report["cost"]["cost_usd"], 2)
    assert shown["cost_usd"] == pytest.approx(calls, abs=1e-9) and report["cost"]["cost_usd"] == pytest.approx(calls)
    cost = report["cost"]
    assert (cost["items"], cost["calls"], cost["calls_per_item"]) == (90, 180, 2.0)
    assert cost["cached_input_share"] is None and cost["saved_by_batch_usd"] is None
    assert list(cost["by_profile"]) == ["persona-certainty"]
    agreement = client.get("/v1/stats/agreement", headers=AUTH_A).get_json()
    assert agreement["cost"] == cost
