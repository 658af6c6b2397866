"""Hostile requests to what session 7's attack left out: cascade profiles in POST /v1/jobs and
/v1/jobs/estimate, budgets and prices no float holds, labels (more than a statement may bind
included), cancel races, Idempotency-Key across routes and Authorization edge cases, the time range
of /v1/stats/agreement, field paths in the details of every 4xx a field causes, and the fairness
rule for a tenant's many small jobs; through Flask's test client on SQLite and PostgreSQL. Each
refusal is a 4xx in the one error shape naming the field, and nothing of a refused job is stored."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from werkzeug.datastructures import Headers

from judge.settings import reset_settings
from store.models import Job
from tests.support.api import (
    AUTH_A,
    AUTH_B,
    KEY_A,
    KEY_B,
    count,
    error_of,
    judge_all,
    make_items,
    new_app,
    post_job,
    unqueued_client,
)

OWN_ENDPOINT = {"provider": "openai-compatible", "base_url": "http://93.184.216.34/v1", "model": "own-model"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return unqueued_client(engine)


def fields(response: Any) -> list[str | None]:
    return [detail["field"] for detail in error_of(response)["details"]]


def raw_post(client: FlaskClient, path: str, body: str, headers: dict[str, str] = AUTH_A) -> Any:
    return client.post(path, data=body, headers={**headers, **JSON})


def cascade(*stages: dict[str, Any], name: str = "c", **fields: Any) -> dict[str, Any]:
    return {"name": name, "cascade": list(stages), **fields}


# ---------------------------------------------------------------- max_cost_usd

def test_a_budget_no_float_can_hold_is_a_422_naming_max_cost_usd_not_a_500(client: FlaskClient,
                                                                           engine: Engine) -> None:
    items = json.dumps(make_items(2))
    for number in ("1" + "0" * 400, "-" + "9" * 400):  # valid JSON integers beyond any float
        response = raw_post(client, "/v1/jobs", f'{{"items": {items}, "max_cost_usd": {number}}}')
        assert response.status_code == 422, response.get_data(as_text=True)
        assert fields(response) == ["max_cost_usd"]
    assert count(engine, Job) == 0


BAD_BUDGETS = [("-1", 422), ("0", 422), ("0.0", 422), ('"5"', 422), ("true", 422), ("[1]", 422), ("{}", 422),
               ("NaN", 400), ("Infinity", 400), ("1e309", 400)]


def test_a_budget_that_is_not_a_positive_finite_number_is_refused(client: FlaskClient, engine: Engine) -> None:
    for value, status in BAD_BUDGETS:
        response = raw_post(client, "/v1/jobs", f'{{"items": {json.dumps(make_items(1))}, "max_cost_usd": {value}}}')
        assert response.status_code == status, value
        assert fields(response) == (["max_cost_usd"] if status == 422 else []), value
    assert count(engine, Job) == 0


def test_the_largest_float_budget_and_a_budget_of_a_cent_are_kept(client: FlaskClient, engine: Engine) -> None:
    for budget in (1e308, 0.01, 3):
        response = post_job(client, make_items(1), max_cost_usd=budget)
        assert response.status_code == 202
        assert client.get(f"/v1/jobs/{response.get_json()['job_id']}", headers=AUTH_A).get_json()[
            "max_cost_usd"] == budget


# ---------------------------------------------------------------- prices at a client's own endpoint

@pytest.mark.parametrize("price", [{"input_per_mtok": 1e308, "output_per_mtok": 1e308}, {"output_per_mtok": 1e300},
                                   {"input_per_mtok": 1, "cached_input_per_mtok": 1e308}])
def test_a_price_beyond_any_real_one_is_refused_before_it_makes_a_cost_no_answer_can_carry(
        client: FlaskClient, engine: Engine, price: dict[str, float]) -> None:
    """At the client's own endpoint its price is kept; a price of 1e308 USD per million tokens
    made every call cost infinity: the estimate answered 500, and the job's cost, verdicts and
    report could never be written as JSON."""
    profile = {**OWN_ENDPOINT, "price": price}
    priced = [f"price.{name}" for name, value in price.items() if value > 1e6]
    items = make_items(3)
    estimate = client.post("/v1/jobs/estimate", json={"items": items, "profile": profile}, headers=AUTH_A)
    assert estimate.status_code == 422, estimate.get_data(as_text=True)
    assert fields(estimate) == [f"profile.{field}" for field in priced]
    job = post_job(client, items, profile=profile)
    assert job.status_code == 422 and fields(job) == [f"profile.{field}" for field in priced]
    stage = post_job(client, items, profile=cascade({"profile": "persona-certainty", "threshold": 0.9},
                                                    {"profile": profile}))
    assert stage.status_code == 422 and fields(stage) == [f"profile.cascade[1].profile.{field}" for field in priced]
    assert count(engine, Job) == 0


def test_a_real_price_at_a_clients_endpoint_is_kept_and_estimated(client: FlaskClient) -> None:
    profile = {**OWN_ENDPOINT, "price": {"input_per_mtok": 150.0, "output_per_mtok": 600.0}}
    estimate = client.post("/v1/jobs/estimate", json={"items": make_items(3), "profile": profile}, headers=AUTH_A)
    assert estimate.status_code == 200 and 0 < estimate.get_json()["cost_usd"] < 10
    assert post_job(client, make_items(3), profile=profile).status_code == 202


# ---------------------------------------------------------------- cascades

NOT_PLAIN = ["../../etc/passwd", "a/b", "x.toml", "two words", "line\nbreak", "\u00fcn\u00efcode", "-leading-dash",
             "tab\there", "a\u202eb"]


def test_a_cascades_name_is_a_plain_name_like_a_profiles(client: FlaskClient, engine: Engine) -> None:
    """A judge profile's `name` must be a plain name; a cascade's name (the job's profile name, the
    filter of /v1/stats/agreement and the dashboard) was taken as it came."""
    for name in NOT_PLAIN:
        body = cascade({"profile": "persona-certainty", "threshold": 0.9}, name=name)
        for path in ("/v1/jobs", "/v1/jobs/estimate"):
            response = client.post(path, json={"items": make_items(2), "profile": body}, headers=AUTH_A)
            assert response.status_code == 422, (name, path, response.get_data(as_text=True))
            assert fields(response) == ["profile.name"] and "plain name" in error_of(response)["message"]
        single = post_job(client, make_items(2), profile={"name": name})  # as a judge profile's name is
        assert single.status_code == 422 and fields(single) == ["profile.name"], name
    assert count(engine, Job) == 0


def test_a_plain_cascade_name_is_the_jobs_profile_name(client: FlaskClient) -> None:
    response = post_job(client, make_items(2), profile=cascade({"profile": "persona-certainty", "threshold": 0.9},
                                                               name="Small_then-large2"))
    assert response.status_code == 202
    assert client.get(f"/v1/jobs/{response.get_json()['job_id']}", headers=AUTH_A).get_json()[
        "profile"] == "Small_then-large2"


def test_a_stage_in_batch_mode_is_refused_rather_than_run_interactively(client: FlaskClient, engine: Engine) -> None:
    """The service runs a cascade's stages interactively (worker.provider_batches handles single
    judges only): a stage asking for the provider's batch API was accepted and silently run at the
    interactive price, and the checks of batch mode (no budget, no start_early) looked only at a
    single profile."""
    profile = cascade({"profile": {"mode": "batch"}, "threshold": 0.9}, {"profile": "persona-certainty"})
    requests = [
        ("/v1/jobs", {"items": make_items(2), "profile": profile}),
        ("/v1/jobs", {"items": make_items(2), "profile": profile, "max_cost_usd": 1}),
        ("/v1/jobs", {"profile": profile, "staged": True, "start_early": True}),
        ("/v1/jobs/estimate", {"items": make_items(2), "profile": profile}),
    ]
    for path, body in requests:
        response = client.post(path, json=body, headers=AUTH_A)
        assert response.status_code == 422, (body, response.get_data(as_text=True))
        assert fields(response) == ["profile.cascade[0].profile.mode"]
        assert "batch" in error_of(response)["message"]
    assert count(engine, Job) == 0
    interactive = cascade({"profile": {"mode": "interactive"}, "threshold": 0.9})
    assert post_job(client, make_items(2), profile=interactive).status_code == 202
    assert post_job(client, make_items(2), profile={"mode": "batch"}).status_code == 202  # a single judge may


def test_a_stored_cascade_with_a_batch_mode_stage_is_refused_by_name(
        client: FlaskClient, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "overnight.toml").write_text(
        'name = "overnight"\n[[cascade]]\nthreshold = 0.9\n[cascade.profile]\nmode = "batch"\n'
        '[[cascade]]\nprofile = "persona-certainty"\n', encoding="utf-8")
    monkeypatch.setenv("PJUDGE_PROFILES", str(folder))
    reset_settings()
    response = post_job(client, make_items(2), profile="overnight")
    assert response.status_code == 422 and fields(response) == ["profile.cascade[0].profile.mode"]
    assert count(engine, Job) == 0


SECRET = "sk-proj-SECRETSECRETSECRET0123456789"


HOSTILE_STAGES: list[tuple[dict[str, Any], str]] = [
    ({"profile": {"api_key": SECRET}}, "profile.cascade[0].profile.api_key"),
    ({"profile": {"api_key_env": SECRET}}, "profile.cascade[0].profile.api_key_env"),
    ({"profile": {"base_url": f"http://user:{SECRET}@93.184.216.34/v1", "provider": "openai-compatible"}},
     "profile.cascade[0].profile.base_url"),
    ({"profile": "persona-certainty", "api_key": SECRET}, "profile.cascade[0].api_key"),
    ({"profile": "persona-certainty", "threshold": True}, "profile.cascade[0].threshold"),
    ({"profile": "persona-certainty", "threshold": "0.9"}, "profile.cascade[0].threshold"),
    ({"profile": "persona-certainty", "threshold": 0.5 - 1e-12}, "profile.cascade[0].threshold"),
    ({"profile": {"template": "../../../etc/passwd"}}, "profile.cascade[0].profile.template"),
    ({"profile": {"template": "persona-certainty.toml"}}, "profile.cascade[0].profile.template"),
    ({"profile": {"max_tokens": 10**9}}, "profile.cascade[0].profile.max_tokens"),
    ({"profile": {"samples": 0}}, "profile.cascade[0].profile.samples"),
    ({"profile": {"temperature": 2.5}}, "profile.cascade[0].profile.temperature"),
    ({"profile": {"temperature": -0.1}}, "profile.cascade[0].profile.temperature"),
    ({"profile": {"temperature": "0.7"}}, "profile.cascade[0].profile.temperature"),
    ({"profile": None}, "profile.cascade[0].profile"),
    ({"threshold": 0.9}, "profile.cascade[0].profile"),
]


def test_a_hostile_stage_is_a_422_naming_its_field_that_never_echoes_a_secret(client: FlaskClient,
                                                                              engine: Engine) -> None:
    for stage, field in HOSTILE_STAGES:
        for path in ("/v1/jobs", "/v1/jobs/estimate"):
            response = client.post(path, json={"items": make_items(1), "profile": cascade(stage)}, headers=AUTH_A)
            assert response.status_code == 422, (stage, response.get_data(as_text=True))
            assert fields(response)[0] == field, stage
            assert SECRET not in response.get_data(as_text=True)
    assert count(engine, Job) == 0
    for threshold in (0.5, 1, 1.0, None):  # the ends of the range, and null (the stage accepts nothing)
        stage = {"profile": "persona-certainty", "threshold": threshold}
        assert post_job(client, make_items(1), profile=cascade(stage)).status_code == 202, threshold


# ---------------------------------------------------------------- the estimate's documented body

def test_the_documented_estimate_body_takes_a_cascade_as_the_route_does(client: FlaskClient) -> None:
    document = client.get("/v1/openapi.json").get_json()
    schema = document["components"]["schemas"]["EstimateCreate"]["properties"]["profile"]
    refs = {option.get("$ref") for option in schema["anyOf"]}
    assert "#/components/schemas/CascadeIn" in refs, schema
    body = {"items": make_items(2), "profile": cascade({"profile": "persona-certainty", "threshold": 0.9})}
    assert client.post("/v1/jobs/estimate", json=body, headers=AUTH_A).status_code == 200


# ---------------------------------------------------------------- /v1/stats/agreement: the range

def test_since_after_until_is_a_400_naming_until_in_the_api_and_the_dashboard(client: FlaskClient,
                                                                              engine: Engine) -> None:
    from tests.test_attack_session7 import sign_in

    judge_all(engine, post_job(client, make_items(6)).get_json()["job_id"])
    reversed_range = "since=2027-01-02&until=2027-01-01T23:59:59Z"
    for extra in ("", "&per_day=true", "&group_by=dataset"):
        response = client.get(f"/v1/stats/agreement?{reversed_range}{extra}", headers=AUTH_A)
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert fields(response) == ["until"] and "since" in error_of(response)["details"][0]["message"]
    sign_in(client)
    page = client.get(f"/dashboard/data/overview?{reversed_range}")
    assert page.status_code == 400 and fields(page) == ["until"]
    # An empty range [t, t) and a range of a microsecond are ranges: they hold nothing, or what is in them.
    for query in ("since=2026-01-01&until=2026-01-01", "since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00.000001Z"):
        response = client.get(f"/v1/stats/agreement?{query}", headers=AUTH_A)
        assert response.status_code == 200 and response.get_json()["counts"]["items"] == 0
    everything = client.get("/v1/stats/agreement?since=2000-01-01&until=2100-01-01", headers=AUTH_A)
    assert everything.get_json()["counts"]["items"] == 6


# ---------------------------------------------------------------- labels

def judged_job(client: FlaskClient, engine: Engine, n: int = 6, headers: dict[str, str] = AUTH_A) -> str:
    job_id: str = post_job(client, make_items(n), headers=headers).get_json()["job_id"]
    judge_all(engine, job_id)
    return job_id


BAD_LABELS: list[tuple[Any, str | None]] = [
    ([{"id": "item-00001", "human_label": "C"}], "[0].human_label"),
    ([{"id": "item-00001", "human_label": "a"}], "[0].human_label"),
    ([{"id": "item-00001", "human_label": "TIE"}], "[0].human_label"),
    ([{"id": "item-00001", "human_label": 1}], "[0].human_label"),
    ([{"id": "item-00001"}], "[0].human_label"),
    ([{"id": 1, "human_label": "A"}], "[0].id"),
    ([{"id": "", "human_label": "A"}], "[0].id"),
    ([{"id": "x" * 513, "human_label": "A"}], "[0].id"),
    ([{"id": "item-00001", "human_label": "A", "note": "x"}], "[0].note"),
    ([{"id": "item-00001", "human_label": "A"}, {"id": "item-00001", "human_label": "B"}], "[1].id"),
    ([{"id": "item-00001", "human_label": "A"}, {"id": "not-in-this-job", "human_label": "B"}], "[1].id"),
    (["A"], "[0]"),
    ({"id": "item-00001", "human_label": "A"}, None),
    ({"labels": [{"id": "item-00001", "human_label": "A"}]}, None),
    ("A", None),
]


def test_bad_labels_are_a_422_naming_the_entry_and_change_no_label(client: FlaskClient, engine: Engine) -> None:
    job_id = judged_job(client, engine)
    before = client.get(f"/v1/jobs/{job_id}/verdicts", headers=AUTH_A).get_json()
    for body, field in BAD_LABELS:
        response = client.post(f"/v1/jobs/{job_id}/labels", json=body, headers=AUTH_A)
        assert response.status_code == 422, (body, response.get_data(as_text=True))
        assert fields(response)[0] == field, body
    huge = [{"id": f"unknown-{i}", "human_label": "A"} for i in range(20_000)] + [{"id": "item-00001", "human_label": "A"}]
    response = client.post(f"/v1/jobs/{job_id}/labels", json=huge, headers=AUTH_A)
    assert response.status_code == 422 and len(fields(response)) == 101  # 100 named, then "... and 19900 more"
    assert response.get_json()["error"]["message"].startswith("20000 unknown item id(s)")
    assert client.get(f"/v1/jobs/{job_id}/verdicts", headers=AUTH_A).get_json() == before  # not even item-00001's


@pytest.mark.slow
def test_more_labels_than_a_statement_may_bind_are_a_422_not_a_500(client: FlaskClient, engine: Engine) -> None:
    """PostgreSQL binds at most 65,535 parameters in a statement: the ids of one labels request
    were all bound in one IN list (500 beyond); a 50 MB body holds over a million labels."""
    job_id = judged_job(client, engine, 3)
    labels = [{"id": f"item-{i:05d}", "human_label": "A"} for i in range(3)]
    labels += [{"id": f"unknown-{i}", "human_label": "A"} for i in range(66_000)]
    response = client.post(f"/v1/jobs/{job_id}/labels", json=labels, headers=AUTH_A)
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert fields(response)[0] == "[3].id" and error_of(response)["message"].startswith("66000 unknown item id(s)")
    assert client.post(f"/v1/jobs/{job_id}/labels", json=labels[:3], headers=AUTH_A).get_json()["labels"] == 3


def test_concurrent_label_posts_each_apply_whole(engine: Engine) -> None:
    app = new_app(engine, lambda job: None)
    client = app.test_client()
    job_id = judged_job(client, engine, 30)
    answers: list[int] = []

    def post(label: str) -> None:
        body = [{"id": f"item-{i:05d}", "human_label": label} for i in range(30)]
        answers.append(app.test_client().post(f"/v1/jobs/{job_id}/labels", json=body, headers=AUTH_A).status_code)

    threads = [threading.Thread(target=post, args=(label,)) for label in ("A", "B", "tie") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 6
    verdicts = client.get(f"/v1/jobs/{job_id}/verdicts?limit=100", headers=AUTH_A).get_json()["verdicts"]
    assert len(verdicts) == 30 and all(v["human_label"] in ("A", "B", "tie") for v in verdicts)
    assert client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()["counts"]["labelled"] == 30


# ---------------------------------------------------------------- cancel

def test_cancel_races_and_repeats_answer_cancelled_a_finished_job_409_another_tenants_404(
        engine: Engine) -> None:
    app = new_app(engine, lambda job: None)
    client = app.test_client()
    job_id = post_job(client, make_items(3)).get_json()["job_id"]
    answers: list[tuple[int, Any]] = []

    def cancel() -> None:
        response = app.test_client().post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=cancel) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [(200, {"job_id": job_id, "status": "cancelled"})] * 6
    # Labels still attach to a cancelled job's items (a report of what was judged before the cancel).
    labelled = client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "item-00000", "human_label": "tie"}],
                           headers=AUTH_A)
    assert labelled.status_code == 200 and labelled.get_json() == {"updated": 0, "labels": 1}
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_B).status_code == 404
    done = judged_job(client, engine, 2)
    refused = client.post(f"/v1/jobs/{done}/cancel", headers=AUTH_A)
    assert refused.status_code == 409 and fields(refused) == ["status"]
    assert client.get(f"/v1/jobs/{done}", headers=AUTH_A).get_json()["status"] == "done"


# ---------------------------------------------------------------- Idempotency-Key and Authorization

def test_an_unusable_idempotency_key_is_a_400_naming_the_header(client: FlaskClient, engine: Engine) -> None:
    for key in ("", "   ", "k" * 256, "k" * 10_000, "cl\u00e9", "a\x01b", "a\tb"):
        response = post_job(client, make_items(1), headers={**AUTH_A, "Idempotency-Key": key})
        assert response.status_code == 400 and fields(response) == ["Idempotency-Key"], key
    assert count(engine, Job) == 0


def test_an_idempotency_key_of_255_characters_replays_and_is_one_per_tenant(client: FlaskClient) -> None:
    key = "k" * 255
    first = post_job(client, make_items(1), headers={**AUTH_A, "Idempotency-Key": key})
    again = post_job(client, make_items(1), headers={**AUTH_A, "Idempotency-Key": f" {key} "})
    theirs = post_job(client, make_items(1), headers={**AUTH_B, "Idempotency-Key": key})
    assert (first.status_code, again.status_code, theirs.status_code) == (202, 200, 202)
    assert again.get_json()["job_id"] == first.get_json()["job_id"] != theirs.get_json()["job_id"]


def test_a_key_that_made_a_job_is_a_409_on_a_page_and_stores_nothing(client: FlaskClient, engine: Engine) -> None:
    """SPEC 8: the same Idempotency-Key on another route is a 409. A page (whose keys are kept per
    job) took a key that had made a job of the same tenant, and stored its items under it."""
    from store.models import JobItem

    made = client.post("/v1/jobs", json={"profile": "persona-certainty", "staged": True},
                       headers={**AUTH_A, "Idempotency-Key": "K1"}).get_json()["job_id"]
    other = client.post("/v1/jobs", json={"items": make_items(2)}, headers={**AUTH_A, "Idempotency-Key": "K2"})
    for key, job_id in (("K1", made), ("K2", other.get_json()["job_id"])):
        response = client.post(f"/v1/jobs/{made}/items", json={"items": make_items(2)},
                               headers={**AUTH_A, "Idempotency-Key": key})
        assert response.status_code == 409, response.get_data(as_text=True)
        assert fields(response) == ["Idempotency-Key"] and job_id in error_of(response)["details"][0]["message"]
    assert count(engine, JobItem) == 2  # the second job's
    # Another tenant's keys are its own; a page's own key replays as before.
    page = client.post(f"/v1/jobs/{made}/items", json={"items": make_items(2)}, headers={**AUTH_A, "Idempotency-Key": "P1"})
    assert page.status_code == 200
    again = client.post(f"/v1/jobs/{made}/items", json={"items": make_items(2)}, headers={**AUTH_A, "Idempotency-Key": "P1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    theirs = client.post("/v1/jobs", json={"profile": "persona-certainty", "staged": True},
                         headers={**AUTH_B, "Idempotency-Key": "K1"}).get_json()["job_id"]
    assert client.post(f"/v1/jobs/{theirs}/items", json={"items": make_items(1)},
                       headers={**AUTH_B, "Idempotency-Key": "K2"}).status_code == 200


def test_a_pages_key_is_a_409_on_a_new_job_and_stores_nothing(client: FlaskClient, engine: Engine) -> None:
    """The other direction: a key that a page of the tenant's job took, sent to make a job."""
    made = client.post("/v1/jobs", json={"profile": "persona-certainty", "staged": True},
                       headers={**AUTH_A, "Idempotency-Key": "J1"}).get_json()["job_id"]
    page = client.post(f"/v1/jobs/{made}/items", json={"items": make_items(2)}, headers={**AUTH_A, "Idempotency-Key": "P1"})
    assert page.status_code == 200
    for body in ({"items": make_items(3)}, {"profile": "persona-certainty", "staged": True}):
        response = client.post("/v1/jobs", json=body, headers={**AUTH_A, "Idempotency-Key": "P1"})
        assert response.status_code == 409, response.get_data(as_text=True)
        assert fields(response) == ["Idempotency-Key"] and made in error_of(response)["details"][0]["message"]
    assert count(engine, Job) == 1
    theirs = client.post("/v1/jobs", json={"items": make_items(3)}, headers={**AUTH_B, "Idempotency-Key": "P1"})
    assert theirs.status_code == 202 and count(engine, Job) == 2  # keys are per tenant


AUTHORIZATIONS = [
    ([f"bearer {KEY_A}"], 200), ([f"BEARER {KEY_A}"], 200), ([f"Bearer {KEY_A}   "], 200), ([f"Bearer   {KEY_A}"], 200),
    ([f"Bearer {KEY_A}", f"Bearer {KEY_B}"], 401), ([f"Bearer {KEY_B}", f"Bearer {KEY_A}"], 401),
    ([f"Bearer {KEY_A}", "Bearer wrong"], 401), ([f"Bearer {KEY_A}, Bearer {KEY_B}"], 401),
    ([f"Bearer\t{KEY_A}"], 401), ([f"Bearer {KEY_A} extra"], 401), ([KEY_A], 401), (["Bearer"], 401),
    ([f"Basic {KEY_A}"], 401), (["Bearer " + "k" * 100_000], 401), (["Bearer cl\u00e9"], 401),
]


def test_authorization_header_edge_cases(engine: Engine) -> None:
    # Enough failures from one address to be throttled (api.throttle) are not what is tested here.
    client = unqueued_client(engine, PJUDGE_AUTH_FAILURES_PER_MINUTE="1000")
    job_id = post_job(client, make_items(1)).get_json()["job_id"]
    for header, status in AUTHORIZATIONS:
        response = client.get(f"/v1/jobs/{job_id}", headers=Headers([("Authorization", value) for value in header]))
        assert response.status_code == status, header[0][:40]
        if status == 401:
            assert error_of(response)["code"] == "unauthorized" and response.headers["WWW-Authenticate"]
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH_B).status_code == 404


# ---------------------------------------------------------------- field paths on every 4xx a field causes

def test_a_refused_header_is_named_in_the_details(client: FlaskClient) -> None:
    job_id = post_job(client, make_items(1)).get_json()["job_id"]
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEY_A}"}):
        response = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 401 and fields(response) == ["Authorization"], headers
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"):
        response = client.post("/v1/jobs", data=json.dumps({"items": make_items(1)}),
                               headers={**AUTH_A, "Content-Type": content_type})
        assert response.status_code == 400 and fields(response) == ["Content-Type"], content_type


TEXT_NO_DATABASE_STORES = [
    ("/v1/jobs", '{"items": [{"id": "a\\u0000b", "prompt": "p", "response_a": "a", "response_b": "b"}]}', "items[0].id"),
    ("/v1/jobs", '{"items": [{"id": "a", "prompt": "p", "response_a": "a", "response_b": "\\ud800"}]}',
     "items[0].response_b"),
    ("/v1/jobs", '{"items": [{"id": "a", "prompt": "p", "response_a": "a", "response_b": "b", '
                 '"metadata": {"k\\u0000": 1}}]}', "items[0].metadata"),
    ("/v1/jobs", '{"items": [{"id": "a", "prompt": "p", "response_a": "a", "response_b": "b", '
                 '"persona": {"tags": ["x", "\\udfff"]}}]}', "items[0].persona.tags[1]"),
    ("/v1/jobs", '{"items": [{"id": "a", "prompt": "p", "response_a": "a", "response_b": "b"}], '
                 '"profile": {"name": "c", "cascade": [{"profile": {"model": "m\\u0000"}}]}}',
     "profile.cascade[0].profile.model"),
    ("/v1/jobs/estimate", '{"items": [{"id": "a", "prompt": "\\u0000", "response_a": "a", "response_b": "b"}]}',
     "items[0].prompt"),
]


def test_a_nul_or_a_lone_surrogate_in_a_json_body_is_named_by_its_path(client: FlaskClient, engine: Engine) -> None:
    for path, body, field in TEXT_NO_DATABASE_STORES:
        response = raw_post(client, path, body)
        assert response.status_code == 422, (field, response.get_data(as_text=True))
        assert fields(response) == [field] and field in error_of(response)["message"]
    job_id = post_job(client, make_items(1)).get_json()["job_id"]
    labels = raw_post(client, f"/v1/jobs/{job_id}/labels", '[{"id": "item-00000", "human_label": "A"}, '
                                                            '{"id": "x\\u0000", "human_label": "B"}]')
    assert labels.status_code == 422 and fields(labels) == ["[1].id"]
    assert count(engine, Job) == 1


# ---------------------------------------------------------------- fairness

def test_a_tenants_many_small_jobs_share_one_share_of_the_threads() -> None:
    """Shares are per owner (the key), not per job: splitting work into many one-batch jobs gives a
    tenant no more threads while another tenant waits (worker.batches.Running; the lanes of
    worker.lanes are per owner too)."""
    from worker.batches import Running

    running = Running()
    running.configure(4, 0.5, waiting_now=lambda: {"a", "b"})
    admitted = [running.enter(f"a-job-{i}", "a", f"a-job-{i}[0:1]") for i in range(6)]
    assert [entry is not None for entry in admitted] == [True, True, False, False, False, False]
    assert running.enter("b-job", "b", "b-job[0:1]") is not None


# ---------------------------------------------------------------- left by the attack, closed by the lead

@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
def test_a_rate_limit_beyond_any_counter_is_a_422_naming_it(client: FlaskClient, engine: Engine, field: str) -> None:
    """10**400 is valid JSON and a valid Python int: it reached the rate limiter's Redis counters."""
    for value in (10**400, 10**10):
        response = post_job(client, make_items(2), profile={"profile": "persona-certainty", field: value})
        assert response.status_code == 422 and fields(response) == [f"profile.{field}"], response.get_json()
    assert count(engine, Job) == 0
    kept = post_job(client, make_items(2), profile={"profile": "persona-certainty", field: 1_000_000_000})
    assert kept.status_code == 202, kept.get_json()


def test_a_negative_zero_threshold_is_reported_as_zero(client: FlaskClient) -> None:
    job_id = post_job(client, make_items(2)).get_json()["job_id"]
    for path in (f"/v1/jobs/{job_id}/report", "/v1/stats/agreement"):
        response = client.get(f"{path}?threshold=-0&hitl=-0.0", headers=AUTH_A)
        assert response.status_code == 200, response.get_json()
        text = response.get_data(as_text=True)
        assert "-0.0" not in text and response.get_json()["high_certainty"]["threshold"] == 0.0


def test_every_route_that_takes_a_body_documents_and_answers_415_for_a_compressed_one(client: FlaskClient) -> None:
    job_id = post_job(client, make_items(2)).get_json()["job_id"]
    document = client.get("/v1/openapi.json").get_json()
    with_body = [(path, method, operation) for path, operations in document["paths"].items()
                 for method, operation in operations.items() if "requestBody" in operation]
    assert len(with_body) >= 6
    for path, method, operation in with_body:
        assert "415" in operation["responses"], (method, path)
        url = path.replace("{job_id}", job_id).replace("{name}", "x")
        response = client.open(url, method=method.upper(), data=b"\x1f\x8b\x08\x00compressed",
                               headers={**AUTH_A, **JSON, "Content-Encoding": "gzip"})
        assert response.status_code == 415 and fields(response) == ["Content-Encoding"], (method, path)


def test_the_api_decodes_bodies_by_the_rule_of_input_files(client: FlaskClient, engine: Engine) -> None:
    """One strict decoding (judge.jsonl.strict_json) for files and bodies: an integer of 4,100
    digits (under Python's own limit) was accepted in a body and refused in a file."""
    item = make_items(1)[0]
    body = json.dumps({"items": [{**item, "metadata": {"n": 0}}]}).replace('"n": 0', '"n": ' + "9" * 4100)
    response = raw_post(client, "/v1/jobs", body)
    assert response.status_code == 400 and "4100 digits is too long" in error_of(response)["message"]
    for constant in ("NaN", "-Infinity", "1e999"):
        bad = raw_post(client, "/v1/jobs", body.replace("9" * 4100, constant))
        assert bad.status_code == 400 and "malformed JSON" in error_of(bad)["message"], constant
    assert count(engine, Job) == 0
