"""Cascades over HTTP (SPEC 2.1, 8): POST /v1/jobs takes a cascade object or a stored cascade's
name; every stage passes the checks of a single profile (issue 12: endpoints, keys, bounds, the
server's prices) with its own field path; bad cascades are 422 naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from judge.profiles import CascadeProfile
from judge.settings import reset_settings
from store import repo
from store.models import Job
from tests.support.api import AUTH_A, count, error_of, make_items, new_app, post_job
from tests.support.personalization import judging_enqueue, response_lines
from tests.support.services import many_items

PRICES = {"small": {"input_per_mtok": 0.1, "output_per_mtok": 0.4},
          "large": {"input_per_mtok": 5.0, "output_per_mtok": 15.0}}


def stage(model: str, threshold: float | None, **fields: Any) -> dict[str, Any]:
    return {"profile": {"profile": "persona-certainty", "name": model, "model": model, **fields},
            "threshold": threshold}


CASCADE = {"name": "small-then-large", "cascade": [stage("small", 0.9), stage("large", 0.8)]}


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return new_app(engine, lambda job: None, PJUDGE_PRICES=json.dumps(PRICES)).test_client()


def field_of(response: Any) -> str:
    assert response.status_code == 422, response.get_json()
    details = error_of(response)["details"]
    return str(details[0]["field"])


def test_a_cascade_object_makes_a_job_that_keeps_every_stage_whole_at_the_servers_price(
        client: FlaskClient, engine: Engine) -> None:
    response = post_job(client, make_items(3), profile=CASCADE, headers={**AUTH_A, "Idempotency-Key": "c1"})
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    job = repo.get_job(engine, job_id)
    assert job is not None
    stored = repo.job_profile(job)
    assert isinstance(stored, CascadeProfile)
    assert stored.thresholds == [0.9, 0.8] and stored.then == "human"
    assert [(j.model, j.price.model_dump()) for j in stored.judges] == [(m, PRICES[m]) for m in ("small", "large")]
    body = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    assert (body["profile"], body["provider"], body["model"]) == ("small-then-large", "cascade", "small > large")
    # The same request with the same key is the same job; another cascade with it is a conflict.
    again = post_job(client, make_items(3), profile=CASCADE, headers={**AUTH_A, "Idempotency-Key": "c1"})
    assert again.status_code == 200 and again.get_json()["job_id"] == job_id
    other = {**CASCADE, "cascade": [stage("small", 0.95), stage("large", 0.8)]}
    assert post_job(client, make_items(3), profile=other, headers={**AUTH_A, "Idempotency-Key": "c1"}).status_code == 409


BAD: list[tuple[Any, str, str]] = [
    ({"name": "c", "cascade": []}, "profile.cascade", "at least 1 item"),
    ({"name": "c", "cascade": [stage("small", 1.5)]}, "profile.cascade[0].threshold", "less than or equal to 1"),
    ({"name": "c", "cascade": [stage("small", 0.49)]}, "profile.cascade[0].threshold", "greater than or equal to 0.5"),
    ({"name": "c", "cascade": [stage("small", 0.9), {"profile": CASCADE, "threshold": 0.9}]},
     "profile.cascade[1].profile.cascade", "a stage must be a judge profile, not a cascade"),
    ({"name": "c", "cascade": [{"profile": "no-such-profile", "threshold": 0.9}]}, "profile.cascade[0].profile",
     "unknown profile 'no-such-profile'"),
    ({"name": "c", "cascade": [{"profile": "../etc/passwd", "threshold": 0.9}]}, "profile.cascade[0].profile",
     "must be a plain name"),
    ({"name": "c", "cascade": [stage("small", 0.9), stage("large", None, samples=32)]},
     "profile.cascade[1].profile.samples", "at most 8 on this server"),
    ({"name": "c", "cascade": [stage("gpt-9", 0.9)]}, "profile.cascade[0].profile.model", "no price for model"),
    ({"name": "c", "cascade": [stage("small", 0.9, price={"input_per_mtok": 0})]},
     "profile.cascade[0].profile.price", "sets the price of jobs at its own endpoints"),
    # Issue 12's endpoint rules hold in every stage: no metadata address, no server key to a client's host.
    ({"name": "c", "cascade": [stage("small", 0.9), stage("large", 0.9, base_url="http://169.254.169.254/v1")]},
     "profile.cascade[1].profile.base_url", "this server does not call this host"),
    ({"name": "c", "cascade": [stage("small", 0.9, provider="openai-compatible", base_url="http://127.0.0.1:9/v1")]},
     "profile.cascade[0].profile.base_url", "this server does not call this host"),
    ({"name": "c", "cascade": [stage("small", 0.9, api_key_env="OPENAI_API_KEY")]},
     "profile.cascade[0].profile.api_key_env", "not a variable this server allows"),
    ({"name": "c", "cascade": [stage("small", 0.9, credential="theirs")]}, "profile.cascade[0].profile.credential",
     "unknown credential"),
    ({"name": "c", "cascade": [stage("small", 0.9, replay_path="/etc/passwd")]},
     "profile.cascade[0].profile.replay_path", "server file paths are not accepted"),
    ({"name": "c", "cascade": [stage("small", 0.9)], "model": "x"}, "profile.model", "unknown field"),
    ({"name": "c", "cascade": [stage("small", 0.9)], "then": "nobody"}, "profile.then", "'human' or 'abstain'"),
    ({"cascade": [stage("small", 0.9)]}, "profile.name", "required"),
]


@pytest.mark.parametrize(("profile", "field", "message"), BAD)
def test_a_bad_cascade_is_422_naming_the_field_and_stores_nothing(client: FlaskClient, engine: Engine,
                                                                  profile: Any, field: str, message: str) -> None:
    response = post_job(client, make_items(2), profile=profile)
    assert field_of(response) == field
    assert message in error_of(response)["details"][0]["message"]
    assert count(engine, Job) == 0


@pytest.fixture
def stored_cascades(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "house.toml").write_text(
        'name = "house"\nthen = "abstain"\n[[cascade]]\nprofile = "persona-certainty"\nthreshold = 0.9\n'
        '[[cascade]]\nthreshold = 0.75\n[cascade.profile]\nname = "house-large"\nmodel = "large"\n',
        encoding="utf-8")
    (folder / "outer.toml").write_text('name = "outer"\n[[cascade]]\nprofile = "house"\nthreshold = 0.9\n',
                                       encoding="utf-8")
    monkeypatch.setenv("PJUDGE_PROFILES", str(folder))
    reset_settings()
    return reset_settings


def test_a_stored_cascade_by_name_runs_at_the_servers_prices_and_takes_no_overrides(
        client: FlaskClient, engine: Engine, stored_cascades: Callable[[], None]) -> None:
    response = post_job(client, make_items(2), profile="house")
    assert response.status_code == 202, response.get_json()
    job = repo.get_job(engine, response.get_json()["job_id"])
    assert job is not None
    stored = repo.job_profile(job)
    assert isinstance(stored, CascadeProfile) and stored.then == "abstain"
    assert [j.model for j in stored.judges] == ["gpt-4o-2024-08-06", "large"]
    assert stored.judges[1].price.model_dump() == PRICES["large"]

    assert field_of(post_job(client, make_items(2), profile={"profile": "house", "model": "small"})) == "profile.profile"
    nested = post_job(client, make_items(2), profile="outer")
    assert field_of(nested) == "profile" and "a stage must be a judge profile" in error_of(nested)["message"]
    as_stage = post_job(client, make_items(2), profile={"name": "c", "cascade": [{"profile": "house"}]})
    assert field_of(as_stage) == "profile.cascade[0].profile"
    # Persona fit is judged by one judge: a cascade is refused there.
    fit = client.post("/v1/personalization", json={"responses": response_lines(), "profile": "house"}, headers=AUTH_A)
    assert field_of(fit) == "profile"
    assert count(engine, Job) == 1


def test_a_cascade_job_judged_against_the_simulator_has_staged_verdicts(engine: Engine, start_sim: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    noisy, clean = start_sim("--noise", "0.3", "--seed", "1"), start_sim("--seed", "2")
    monkeypatch.setenv("PJUDGE_ENDPOINTS", f"{noisy.openai_base_url},{clean.openai_base_url}")
    reset_settings()
    client = new_app(engine, judging_enqueue(engine), PJUDGE_PRICES=json.dumps(PRICES)).test_client()
    profile = {"name": "sim-cascade", "cascade": [
        stage("small", 0.9, provider="openai-compatible", base_url=noisy.openai_base_url),
        stage("large", 0.7, provider="openai-compatible", base_url=clean.openai_base_url)]}
    items = [json.loads(item.model_dump_json(exclude_none=True)) for item in many_items(40)]
    response = post_job(client, items, profile=profile)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    page = client.get(f"/v1/jobs/{job_id}/verdicts?limit=100", headers=AUTH_A).get_json()["verdicts"]
    assert len(page) == 40
    reached = sum(len(v["stages"]) == 2 for v in page)
    assert 0 < reached < 40 and noisy.stats()["requests"] == 80 and clean.stats()["requests"] == 2 * reached
    for verdict in page:
        assert verdict["judge"] == {"profile": "sim-cascade", "provider": "cascade", "model": "small > large"}
        assert {c["stage"] for c in verdict["calls"]} == set(range(len(verdict["stages"])))
        assert verdict["abstained"] is (verdict["stage"] is None)
    job = repo.get_job(engine, job_id)
    assert job is not None and job.status == "done"
    assert job.cost_usd == pytest.approx(sum(s["cost_usd"] for v in page for s in v["stages"]))
    # The report, the export (escalated items are not preference data) and the dashboard stats.
    report = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A)
    assert report.status_code == 200, report.get_json()
    assert report.get_json()["counts"]["items"] == 40
    assert report.get_json()["abstention"]["abstained"] == sum(v["abstained"] for v in page)
    export = client.get(f"/v1/jobs/{job_id}/export?format=dpo", headers=AUTH_A).get_data(as_text=True).splitlines()
    assert sorted(json.loads(line)["id"] for line in export) == sorted(
        v["id"] for v in page if not v["abstained"] and v["winner"] in ("A", "B"))
    stats = client.get("/v1/stats/agreement?profile=sim-cascade", headers=AUTH_A)
    assert stats.status_code == 200 and stats.get_json()["counts"]["items"] == 40, stats.get_json()
