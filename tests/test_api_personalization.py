"""POST /v1/personalization and its routes: responses validated by the CLI's reader, persona pairs
stored as an ordinary job of kind "personalization", and a report equal to `pjudge personalization
--judge --format json` for the same responses (judged by the real runner against llm-sim). Real
migrated databases (SQLite; PostgreSQL where PJUDGE_TEST_POSTGRES_URL is set), injected enqueue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

import api.personalization
from api.schemas import PersonalizationReport
from store import repo
from store.models import Job, JobInput, JobItem
from tests.support.api import AUTH_A, AUTH_B, count, error_of, make_items, make_verdict, new_app
from tests.support.cli import run_pjudge
from tests.support.personalization import (
    PERSONAS,
    PROMPTS,
    SIM_PROFILE,
    interests,
    judging_enqueue,
    response_lines,
)

SHARED_SYSTEM_KEYS = ("n_prompts", "n_skipped", "degress", "egises", "edp", "perseval", "persona_fit_win_rate",
                      "persona_fit_ci95", "pairwise_difference", "pairwise_difference_ci95", "n_pairs")


def post(client: FlaskClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/personalization", json=body, headers=headers or AUTH_A)


@pytest.fixture
def queued(engine: Engine) -> tuple[FlaskClient, list[Job]]:
    """A client whose enqueue only records the jobs (they stay queued)."""
    sent: list[Job] = []
    return new_app(engine, sent.append).test_client(), sent


# ---------------------------------------------------------------- the happy path, against the CLI

def test_report_equals_the_cli_for_the_same_responses(engine: Engine, tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim("--noise", "0.0", "--first-bias", "0.2", "--seed", "3")
    lines = response_lines()
    client = new_app(engine, judging_enqueue(engine), PJUDGE_ENDPOINTS=sim.openai_base_url).test_client()
    profile = {**SIM_PROFILE, "base_url": sim.openai_base_url}

    created = post(client, {"responses": lines, "profile": profile})
    assert created.status_code == 202, created.get_json()
    body = created.get_json()
    job_id = body["job_id"]
    assert body["kind"] == "personalization" and body["pairs"] == 2 * 3 * 6  # systems x prompts x ordered pairs
    assert created.headers["Location"] == f"/v1/personalization/{job_id}"
    assert repo.job_inputs(engine, job_id)["responses"] == lines  # type: ignore[index]

    status = client.get(f"/v1/personalization/{job_id}", headers=AUTH_A).get_json()
    assert status["kind"] == "personalization" and status["status"] == "done"
    assert status["counts"]["items"] == status["counts"]["verdicts"] == 36 and status["counts"]["calls"] == 72
    assert status["cost_usd"] > 0
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()["kind"] == "personalization"

    response = client.get(f"/v1/personalization/{job_id}/report", headers=AUTH_A)
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    PersonalizationReport.model_validate(report)  # the documented response schema
    assert report["job_id"] == job_id and report["judge"]["verdicts"] == f"/v1/jobs/{job_id}/verdicts"
    faithful, shuffled = report["systems"]["faithful"], report["systems"]["shuffled"]
    assert faithful["persona_fit_win_rate"] > 0.5 > shuffled["persona_fit_win_rate"]
    assert faithful["perseval"] > shuffled["perseval"]

    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cli = run_pjudge("personalization", str(path), "--judge", "persona-certainty", "--provider", "openai-compatible",
                     "--model", "sim-judge", "--base-url", sim.openai_base_url, "--format", "json")
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    for system, scores in expected["systems"].items():
        assert {key: report["systems"][system][key] for key in SHARED_SYSTEM_KEYS} == {
            key: scores[key] for key in SHARED_SYSTEM_KEYS}
        assert report["systems"][system] == scores  # and every other key the CLI prints
    assert {k: v for k, v in report.items() if k not in ("job_id", "judge")} == {
        k: v for k, v in expected.items() if k != "judge"}
    assert {k: v for k, v in report["judge"].items() if k != "verdicts"} == {
        k: v for k, v in expected["judge"].items() if k != "verdicts"}
    assert report["judge"]["simulated"] is True

    # The bootstrap is a query away, seeded like the CLI's --bootstrap/--seed.
    without = client.get(f"/v1/personalization/{job_id}/report?bootstrap=0", headers=AUTH_A).get_json()
    assert without["systems"]["faithful"]["persona_fit_ci95"] is None
    assert without["systems"]["faithful"]["persona_fit_win_rate"] == faithful["persona_fit_win_rate"]


# ---------------------------------------------------------------- report before done

def test_report_is_409_until_the_job_is_done(engine: Engine, queued: tuple[FlaskClient, list[Job]]) -> None:
    client, sent = queued
    job_id = post(client, {"responses": response_lines()}).get_json()["job_id"]
    assert [job.id for job in sent] == [job_id]
    refused = client.get(f"/v1/personalization/{job_id}/report", headers=AUTH_A)
    assert refused.status_code == 409
    error = error_of(refused)
    assert error["code"] == "job_not_done" and "0 of 36" in error["message"]
    assert error["details"] == [{"field": "status", "message": "queued"}]

    # Half judged (a worker is running): still 409, with the progress.
    stored = repo.job_items(engine, job_id, 0, 36)
    repo.mark_running(engine, job_id)
    repo.record_verdicts(engine, job_id, [(p, make_verdict(item, "A", 0.8)) for p, item in stored[:18]])
    error = error_of(client.get(f"/v1/personalization/{job_id}/report", headers=AUTH_A))
    assert "running (18 of 36" in error["message"]

    repo.record_verdicts(engine, job_id, [(p, make_verdict(item, "B", 0.3)) for p, item in stored[18:]])
    assert repo.get_job(engine, job_id).status == "done"  # the last verdicts' transaction finished it
    assert not repo.finish_if_complete(engine, job_id)
    report = client.get(f"/v1/personalization/{job_id}/report", headers=AUTH_A).get_json()
    # Items are made system by system: the first half is every faithful pair (p_a 0.8), then the shuffled ones.
    faithful, shuffled = report["systems"]["faithful"], report["systems"]["shuffled"]
    assert (faithful["n_pairs"], shuffled["n_pairs"]) == (18, 18)
    assert faithful["persona_fit_win_rate"] == pytest.approx(0.8) and shuffled["persona_fit_win_rate"] == pytest.approx(0.3)
    assert report["judge"]["items"] == 36 and report["judge"]["calls"] == 72 and report["judge"]["simulated"] is False


def test_a_cancelled_job_has_no_report(engine: Engine, queued: tuple[FlaskClient, list[Job]]) -> None:
    client, _ = queued
    job_id = post(client, {"responses": response_lines()}).get_json()["job_id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A).status_code == 200
    refused = client.get(f"/v1/personalization/{job_id}/report", headers=AUTH_A)
    assert refused.status_code == 409 and "cancelled" in error_of(refused)["message"]


# ---------------------------------------------------------------- bad input

def _without(field: str, index: int) -> list[dict[str, Any]]:
    lines = response_lines()
    del lines[index][field]
    return lines


def _undescribed(persona: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in line.items() if not (k == "persona" and line["persona_id"] == persona)}
            for line in response_lines()]


BAD_REQUESTS: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (body, field of a detail, text of its message)
    "line without persona_id": ({"responses": _without("persona_id", 3)}, "responses[3].persona_id",
                                "required field is missing"),
    "unknown profile": ({"responses": response_lines(), "profile": "no-such-profile"}, "profile", "no-such-profile"),
    "unknown base profile": ({"responses": response_lines(), "profile": {"profile": "nope"}}, "profile.profile",
                             "unknown profile"),
    "persona without description": ({"responses": _undescribed("u3")}, "responses[4].persona",
                                    "persona 'u3' has no description"),
    "prompt without text": ({"responses": [{k: v for k, v in line.items() if k != "prompt"}
                                           for line in response_lines()]}, "responses[0].prompt", "has no text"),
    "description differs": ({"responses": response_lines(), "personas": {"u1": "Someone else."}}, "personas.u1",
                            "differs"),
    "empty description": ({"responses": _undescribed("u3"), "personas": {"u3": " "}}, "personas.u3",
                          "must not be empty"),
    "unknown system": ({"responses": response_lines(), "systems": ["nope"]}, "systems", "'nope'"),
    "anchor without anchors": ({"responses": response_lines(), "anchor_system": "faithful"}, "anchor_system",
                               "no persona-agnostic response"),
    "no swap": ({"responses": response_lines(), "profile": {"swap": False}}, "profile.swap", "both orders"),
    "unknown distance": ({"responses": response_lines(), "distance": "cosine"}, "distance", "jsd"),
    "unknown field": ({"responses": response_lines(), "items": []}, "items", "unknown field"),
    "no responses": ({"responses": []}, "responses", "non-empty list"),
    "one persona per prompt": ({"responses": [line for line in response_lines() if line["persona_id"] == "u1"]},
                               "responses", "no persona pairs"),
    "only anchors": ({"responses": [{"prompt_id": "q", "persona_id": None, "system": "s", "response": "x"}]},
                     "responses", "no persona responses"),
    "pair id too long": ({"responses": [{**line, "prompt_id": "q" * 520} if line["prompt_id"] == "q0" else line
                                        for line in response_lines()]}, "responses[0]", "pair id"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_are_422_naming_the_field_and_store_nothing(name: str, engine: Engine,
                                                                 queued: tuple[FlaskClient, list[Job]]) -> None:
    client, sent = queued
    body, field, text = BAD_REQUESTS[name]
    response = post(client, body)
    assert response.status_code == 422, response.get_json()
    details = error_of(response)["details"]
    assert any(d["field"] == field and text in d["message"] for d in details), details
    assert count(engine, Job) == 0 and count(engine, JobItem) == 0 and count(engine, JobInput) == 0 and not sent


def test_request_maps_complete_the_lines(engine: Engine, queued: tuple[FlaskClient, list[Job]]) -> None:
    client, sent = queued
    lines = [{k: v for k, v in line.items() if k not in ("persona", "prompt")} for line in response_lines()]
    personas = {persona: f"The person enjoys {interests(persona)}." for persona in PERSONAS}
    prompts = {f"q{i}": question for i, (question, _) in enumerate(PROMPTS)}
    response = post(client, {"responses": lines, "personas": {**personas, "unused": "Ignored."}, "prompts": prompts,
                             "systems": ["faithful"]})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["pairs"] == 3 * 6
    items = [item for _, item in repo.job_items(engine, sent[0].id, 0, sent[0].n_items)]
    assert {item.metadata["system"] for item in items} == {"faithful"}
    first = items[0]
    assert first.persona == personas[first.metadata["persona_p"]] and first.prompt == prompts[first.metadata["prompt_id"]]


def test_too_many_pairs_is_refused_before_expansion(queued: tuple[FlaskClient, list[Job]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = queued
    monkeypatch.setattr(api.personalization, "MAX_PAIRS", 35)
    response = post(client, {"responses": response_lines()})
    assert response.status_code == 422 and error_of(response)["code"] == "too_many_pairs"
    assert "36 persona pairs" in error_of(response)["message"]


# ---------------------------------------------------------------- idempotency and ownership

def test_same_idempotency_key_returns_the_same_job(engine: Engine, queued: tuple[FlaskClient, list[Job]]) -> None:
    client, sent = queued
    body = {"responses": response_lines()}
    first = post(client, body, {**AUTH_A, "Idempotency-Key": "pers-1"})
    second = post(client, body, {**AUTH_A, "Idempotency-Key": "pers-1"})
    assert first.status_code == 202 and second.status_code == 200
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert first.get_json() == second.get_json()
    assert count(engine, Job) == 1 and count(engine, JobInput) == 1 and len(sent) == 1

    # The same key with another request (same pair count, other text) is refused.
    changed = response_lines()
    changed[0]["response"] += " Also: tulips."
    conflict = post(client, {"responses": changed}, {**AUTH_A, "Idempotency-Key": "pers-1"})
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "conflict"
    # ... and so is a key first used for a pairwise job.
    assert client.post("/v1/jobs", json={"items": make_items(3)},
                       headers={**AUTH_A, "Idempotency-Key": "pairwise-1"}).status_code == 202
    assert post(client, body, {**AUTH_A, "Idempotency-Key": "pairwise-1"}).status_code == 409
    assert count(engine, Job) == 2
    # ... and a key first used here is refused on /v1/jobs, whatever that request holds.
    stored = repo.job_items(engine, first.get_json()["job_id"], 0, 1000)
    same_items = [item.model_dump(mode="json", exclude_none=True) for _, item in stored]
    conflict = client.post("/v1/jobs", json={"items": same_items},  # the same job but for its route
                           headers={**AUTH_A, "Idempotency-Key": "pers-1"})
    assert conflict.status_code == 409 and error_of(conflict)["details"][0]["field"] == "Idempotency-Key"
    assert count(engine, Job) == 2 and len(sent) == 2


def test_another_keys_job_and_a_pairwise_job_are_not_found(queued: tuple[FlaskClient, list[Job]]) -> None:
    client, _ = queued
    job_id = post(client, {"responses": response_lines()}).get_json()["job_id"]
    for path in (f"/v1/personalization/{job_id}", f"/v1/personalization/{job_id}/report", f"/v1/jobs/{job_id}"):
        response = client.get(path, headers=AUTH_B)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    pairwise = client.post("/v1/jobs", json={"items": make_items(3)}, headers=AUTH_A).get_json()["job_id"]
    assert client.get(f"/v1/jobs/{pairwise}", headers=AUTH_A).get_json()["kind"] == "pairwise"
    for path in (f"/v1/personalization/{pairwise}", f"/v1/personalization/{pairwise}/report"):
        assert client.get(path, headers=AUTH_A).status_code == 404
    assert client.get("/v1/personalization/not-a-uuid", headers=AUTH_A).status_code == 404
    assert client.post("/v1/personalization", json={"responses": response_lines()}).status_code == 401


def test_bad_report_query_is_400(queued: tuple[FlaskClient, list[Job]]) -> None:
    client, _ = queued
    job_id = post(client, {"responses": response_lines()}).get_json()["job_id"]
    for query in ("bootstrap=-1", "bootstrap=99999", "seed=x", "treshold=1"):
        response = client.get(f"/v1/personalization/{job_id}/report?{query}", headers=AUTH_A)
        assert response.status_code == 400, query


# ---------------------------------------------------------------- the OpenAPI document

def test_openapi_documents_the_personalization_routes(queued: tuple[FlaskClient, list[Job]]) -> None:
    client, _ = queued
    app: Flask = client.application
    document = client.get("/v1/openapi.json").get_json()
    paths = document["paths"]
    create = paths["/v1/personalization"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PersonalizationCreate"}
    assert set(create["responses"]) == {"200", "202", "400", "401", "409", "413", "415", "422", "429"}
    assert "get" in paths["/v1/personalization/{job_id}"]
    report = paths["/v1/personalization/{job_id}/report"]["get"]
    assert {p["name"] for p in report["parameters"]} == {"job_id", "bootstrap", "seed"}
    assert "409" in report["responses"]
    assert {"ResponseLine", "PersonalizationCreate", "PersonalizationAccepted", "PersonalizationReport"} <= set(
        document["components"]["schemas"])
    assert "kind" in document["components"]["schemas"]["JobOut"]["required"]
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/v1/personalization", "/v1/personalization/<job_id>", "/v1/personalization/<job_id>/report"} <= rules
    import openapi_spec_validator  # the `test` extra
    openapi_spec_validator.validate(document)
