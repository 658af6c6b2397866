"""The HTTP API (SPEC section 8) through Flask's test client, on a real migrated database (SQLite
in tmp_path; PostgreSQL too where PJUDGE_TEST_POSTGRES_URL is set), with an injected enqueue that
records the job instead of sending it to Redis."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from api.app import create_app
from judge.records import Verdict
from store import repo
from store.models import Job, JobItem
from tests.support.api import (
    AUTH_A,
    AUTH_B,
    KEY_A,
    count,
    error_of,
    judge_all,
    make_items,
    new_app,
    post_job,
)

SPEC4_KEYS = {"accuracy", "accuracy_no_tie", "counts", "cohen_kappa", "krippendorff_alpha", "high_certainty",
              "low_certainty", "coverage_curve", "ece", "brier", "position_consistency", "first_position_rate",
              "prefers_longer", "hitl"}
MB = 1024 * 1024


# ---------------------------------------------------------------- fixtures
# (client, app and enqueued: tests/conftest.py)

@pytest.fixture
def job_id(client: FlaskClient) -> str:
    response = post_job(client, make_items(40), profile="persona-certainty")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- POST /v1/jobs

def test_post_1000_items_stores_the_job_and_every_item(client: FlaskClient, engine: Engine,
                                                        enqueued: list[Any]) -> None:
    items = make_items(1000)
    started = time.perf_counter()
    response = post_job(client, items, profile="persona-certainty")
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and body["job_id"]
    assert response.headers["Location"] == f"/v1/jobs/{body['job_id']}"
    assert count(engine, Job) == 1 and count(engine, JobItem) == 1000
    assert [job.id for job in enqueued] == [body["job_id"]]
    stored = repo.job_items(engine, body["job_id"], 0, 1000)
    assert [item.id for _, item in stored] == [i["id"] for i in items]  # positions keep the input order
    assert stored[1][1].persona == items[1]["persona"] and stored[0][1].metadata == {"dataset": "test", "group": 0}
    assert elapsed < 10, f"1000-item POST took {elapsed:.2f}s"
    print(f"\n1000-item POST: {elapsed * 1000:.0f} ms")


def test_get_job_reports_status_counts_and_iso_times(client: FlaskClient, engine: Engine, job_id: str) -> None:
    body = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    assert body["job_id"] == job_id and body["status"] == "queued"
    assert body["counts"] == {"items": 40, "verdicts": 0, "calls": 0, "failed_calls": 0, "failed_items": 0,
                              "awaiting_label": 0}
    assert body["profile"] == "persona-certainty" and body["model"] and body["provider"] == "openai"
    assert body["created_at"].endswith("Z") and body["started_at"] is None and body["finished_at"] is None
    judge_all(engine, job_id, lambda p, _: (None, None, False) if p == 3 else ("A", 0.9, False))
    body = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    assert body["status"] == "done" and body["finished_at"].endswith("Z")
    assert body["counts"] == {"items": 40, "verdicts": 40, "calls": 80, "failed_calls": 2, "failed_items": 1,
                              "awaiting_label": 0}
    assert body["cost_usd"] == round(80 * 0.0005, 6)


def test_profile_object_overrides_a_base_and_batch_size_is_configurable(engine: Engine) -> None:
    sent: list[Any] = []
    client = new_app(engine, sent.append, PJUDGE_BATCH_SIZE=50,
                     PJUDGE_ENDPOINTS="openai-compatible=http://127.0.0.1:9/v1|SIM_API_KEY",
                     PJUDGE_API_KEY_ENVS="SIM_API_KEY").test_client()
    profile = {"profile": "persona-tie", "provider": "openai-compatible", "model": "sim-judge",
               "base_url": "http://127.0.0.1:9/v1", "samples": 2, "api_key_env": "SIM_API_KEY"}
    response = post_job(client, make_items(120), profile=profile)
    assert response.status_code == 202, response.get_json()
    job = sent[0]
    assert job.batch_size == 50 and len(repo.batches(job)) == 3
    stored = repo.job_profile(job)
    assert (stored.name, stored.template, stored.model, stored.samples, stored.base_url) == (
        "persona-tie", "persona-tie", "sim-judge", 2, "http://127.0.0.1:9/v1")


def test_labels_in_the_job_override_the_items_labels(client: FlaskClient, engine: Engine) -> None:
    items = make_items(5)
    response = post_job(client, items, labels=[{"id": "item-00001", "human_label": "B"},
                                               {"id": "item-00002", "human_label": None}])
    assert response.status_code == 202
    stored = dict((item.id, item) for _, item in repo.job_items(engine, response.get_json()["job_id"], 0, 5))
    assert stored["item-00001"].human_label == "B" and stored["item-00002"].human_label is None
    bad = post_job(client, items, labels=[{"id": "nope", "human_label": "A"}])
    assert bad.status_code == 422 and "nope" in error_of(bad)["message"]
    assert count(engine, Job) == 1


def test_enqueue_failure_still_answers_202_and_keeps_the_job_queued(engine: Engine,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(job: Any) -> None:
        raise ConnectionError("Error 111 connecting to redis://:hunter2-broker-password@10.0.0.1:6379")

    client = new_app(engine, broken).test_client()
    with caplog.at_level(logging.DEBUG):
        response = post_job(client, make_items(3))
    assert response.status_code == 202
    job = repo.get_job(engine, response.get_json()["job_id"])
    assert job is not None and job.status == "queued" and job.n_items == 3
    assert "not enqueued" in caplog.text and "hunter2" not in caplog.text


# ---------------------------------------------------------------- idempotency

def test_same_idempotency_key_returns_the_same_job(client: FlaskClient, engine: Engine, enqueued: list[Any]) -> None:
    items = make_items(30)
    first = post_job(client, items, headers={**AUTH_A, "Idempotency-Key": "batch-7"})
    second = post_job(client, items, headers={**AUTH_A, "Idempotency-Key": "batch-7"})
    assert first.status_code == 202 and second.status_code == 200
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert first.get_json()["job_id"] == second.get_json()["job_id"]
    assert count(engine, Job) == 1 and count(engine, JobItem) == 30 and len(enqueued) == 1
    # Keys are scoped to the caller: another key's same Idempotency-Key is another job.
    other = post_job(client, items, headers={**AUTH_B, "Idempotency-Key": "batch-7"})
    assert other.status_code == 202 and other.get_json()["job_id"] != first.get_json()["job_id"]
    # The same key for a visibly different request is refused, not silently answered.
    conflict = post_job(client, items[:10], headers={**AUTH_A, "Idempotency-Key": "batch-7"})
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "conflict"
    assert count(engine, Job) == 2
    bad = post_job(client, items, headers={**AUTH_A, "Idempotency-Key": "x" * 300})
    assert bad.status_code == 400 and error_of(bad)["details"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("change", ["other items of the same count", "other labels", "base_url", "samples",
                                    "temperature", "swap", "another profile"])
def test_the_same_idempotency_key_with_any_other_request_is_409(engine: Engine, enqueued: list[Any],
                                                               change: str) -> None:
    client = new_app(engine, enqueued.append,  # the operator's endpoints: the base_url change is allowed
                     PJUDGE_ENDPOINTS="http://llm.internal/v1,http://llm2.internal/v1").test_client()
    items = make_items(6)
    profile: dict[str, Any] = {"profile": "persona-certainty", "base_url": "http://llm.internal/v1", "samples": 1,
                               "temperature": 0.0, "swap": True}
    labels = [{"id": items[0]["id"], "human_label": "A"}]
    headers = {**AUTH_A, "Idempotency-Key": "retry-me"}
    assert post_job(client, items, headers, profile=profile, labels=labels).status_code == 202
    same = post_job(client, json.loads(json.dumps(items)), headers, profile=dict(reversed(profile.items())),
                    labels=labels)
    assert same.status_code == 200 and same.headers.get("Idempotent-Replayed") == "true"
    other_items, other_profile, other_labels = items, dict(profile), labels
    if change == "other items of the same count":
        other_items = [*items[:5], {**items[5], "response_b": items[5]["response_b"] + " Or not."}]
    elif change == "other labels":
        other_labels = [{"id": items[0]["id"], "human_label": "B"}]
    elif change == "another profile":
        other_profile["profile"] = "persona-tie"
    else:
        other_profile[change] = {"base_url": "http://llm2.internal/v1", "samples": 3, "temperature": 0.7,
                                 "swap": False}[change]
    conflict = post_job(client, other_items, headers, profile=other_profile, labels=other_labels)
    assert conflict.status_code == 409, conflict.get_json()
    error = error_of(conflict)
    assert error["code"] == "conflict" and error["details"][0]["field"] == "Idempotency-Key"
    assert count(engine, Job) == 1 and len(enqueued) == 1


# ---------------------------------------------------------------- bad input

def test_item_517_missing_response_b_names_index_and_field_and_stores_nothing(client: FlaskClient,
                                                                             engine: Engine) -> None:
    items = make_items(1000)
    del items[517]["response_b"]
    response = post_job(client, items)
    assert response.status_code == 422
    error = error_of(response)
    assert "items[517]" in error["message"] and "response_b" in error["message"]
    assert error["details"] == [{"field": "items[517].response_b", "message": "required field is missing"}]
    assert count(engine, Job) == 0 and count(engine, JobItem) == 0


BAD_BODIES: list[tuple[str, Any, dict[str, str], int, str | None]] = [
    # (name, raw body, headers, status, field named in details)
    ("malformed json", b'{"items": [', {"Content-Type": "application/json"}, 400, None),
    ("empty body", b"", {"Content-Type": "application/json"}, 400, None),
    ("form content type", b"items=1", {"Content-Type": "application/x-www-form-urlencoded"}, 400, None),
    ("no content type", b'{"items": []}', {}, 400, None),
    ("latin-1 charset", b'{"items": []}', {"Content-Type": "application/json; charset=latin-1"}, 400, None),
    ("invalid utf-8", b'{"items": ["\xff\xfe"]}', {"Content-Type": "application/json"}, 400, None),
    ("NaN", b'{"items": [{"id": "a", "metadata": {"x": NaN}}]}', {"Content-Type": "application/json"}, 400, None),
    ("deep nesting", b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {"Content-Type": "application/json"},
     400, None),
    ("float overflow", b'{"items": [{"id": "a", "prompt": "p", "response_a": "a", "response_b": "b", '
                       b'"metadata": {"x": 1e400}}]}', {"Content-Type": "application/json"}, 400, None),
    ("deep metadata", json.dumps({"items": [{**make_items(1)[0], "metadata": {"x": json.loads("[" * 300 + "]" * 300)}}]}
                                 ).encode(), {"Content-Type": "application/json"}, 422, "items[0].metadata"),
    ("huge integer", b'{"items": [' + b"9" * 5000 + b"]}", {"Content-Type": "application/json"}, 400, None),
    ("array body", b"[1, 2]", {"Content-Type": "application/json"}, 422, None),
    ("string body", b'"items"', {"Content-Type": "application/json"}, 422, None),
    ("unknown field", json.dumps({"items": make_items(1), "extra": 1}).encode(), {"Content-Type": "application/json"},
     422, "extra"),
    ("items missing", b"{}", {"Content-Type": "application/json"}, 422, "items"),
    ("items not a list", b'{"items": {"id": "a"}}', {"Content-Type": "application/json"}, 422, "items"),
    ("items empty", b'{"items": []}', {"Content-Type": "application/json"}, 422, "items"),
    ("item not an object", b'{"items": [1]}', {"Content-Type": "application/json"}, 422, "items[0]"),
    ("id of wrong type", json.dumps({"items": [{**make_items(1)[0], "id": 5}]}).encode(),
     {"Content-Type": "application/json"}, 422, "items[0].id"),
    ("metadata of wrong type", json.dumps({"items": [{**make_items(1)[0], "metadata": [1]}]}).encode(),
     {"Content-Type": "application/json"}, 422, "items[0].metadata"),
    ("bad human label", json.dumps({"items": [{**make_items(1)[0], "human_label": "C"}]}).encode(),
     {"Content-Type": "application/json"}, 422, "items[0].human_label"),
    ("unknown item field", json.dumps({"items": [{**make_items(1)[0], "score": 1}]}).encode(),
     {"Content-Type": "application/json"}, 422, "items[0].score"),
    ("duplicate ids", json.dumps({"items": make_items(2)[:1] * 2}).encode(), {"Content-Type": "application/json"},
     422, "items[1].id"),
    ("id too long", json.dumps({"items": [{**make_items(1)[0], "id": "x" * 600}]}).encode(),
     {"Content-Type": "application/json"}, 422, "items[0].id"),
    ("blank prompt", json.dumps({"items": [{**make_items(1)[0], "prompt": " \u3000\t"}]}).encode(),
     {"Content-Type": "application/json"}, 422, "items[0].prompt"),
    ("lone surrogate", b'{"items": [{"id": "\\ud800", "prompt": "p", "response_a": "a", "response_b": "b"}]}',
     {"Content-Type": "application/json"}, 422, None),
    ("NUL character", b'{"items": [{"id": "a\\u0000b", "prompt": "p", "response_a": "a", "response_b": "b"}]}',
     {"Content-Type": "application/json"}, 422, None),
    ("profile of wrong type", json.dumps({"items": make_items(1), "profile": 7}).encode(),
     {"Content-Type": "application/json"}, 422, "profile"),
    ("labels of wrong type", json.dumps({"items": make_items(1), "labels": "A"}).encode(),
     {"Content-Type": "application/json"}, 422, "labels"),
]


@pytest.mark.parametrize("name,raw,headers,status,field", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_4xx_with_the_error_shape_and_store_nothing(client: FlaskClient, engine: Engine, name: str,
                                                                  raw: bytes, headers: dict[str, str], status: int,
                                                                  field: str | None) -> None:
    response = client.post("/v1/jobs", data=raw, headers={**AUTH_A, **headers})
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    error = error_of(response)
    if field is not None:
        assert field in [d["field"] for d in error["details"]], error
    assert count(engine, Job) == 0 and count(engine, JobItem) == 0


def test_unicode_that_is_valid_is_stored_as_sent(client: FlaskClient, engine: Engine) -> None:
    odd = "👩‍👩‍👧 e\u0301 \u202eRTL\u202c \ufeff zero\u200bwidth 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \\ud800 as text"
    items = [{"id": "ü-1 😀", "prompt": odd, "response_a": odd, "response_b": "b", "persona": {"язык": odd}}]
    response = post_job(client, items)
    assert response.status_code == 202, response.get_json()
    [(_, stored)] = repo.job_items(engine, response.get_json()["job_id"], 0, 1)
    assert stored.id == "ü-1 😀" and stored.prompt == odd and stored.persona == {"язык": odd}


@pytest.mark.parametrize("profile,field", [
    ("no-such-profile", "profile"),
    ({"profile": "no-such-profile"}, "profile.profile"),
    ({"template": "no-such-template"}, "profile"),
    ("../../etc/passwd", "profile"),
    ("pyproject.toml", "profile"),
    ({"template": "/etc/hosts"}, "profile.template"),
    ({"replay_path": "/etc/passwd", "provider": "replay"}, "profile.replay_path"),
    ({"api_key_env": "DATABASE_URL"}, "profile.api_key_env"),
    ({"samples": "many"}, "profile.samples"),
    ({"samples": 0}, "profile.samples"),
    ({"provider": "azure"}, "profile.provider"),
    ({"price": {"input_per_mtok": -1}}, "profile.price.input_per_mtok"),
    ({"unknown_field": 1}, "profile.unknown_field"),
    ([], "profile"),
])
def test_bad_profiles_are_422_naming_the_field(client: FlaskClient, engine: Engine, profile: Any, field: str) -> None:
    response = post_job(client, make_items(2), profile=profile)
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert error["details"][0]["field"] == field, error
    assert count(engine, Job) == 0


def test_base_url_allow_list(engine: Engine) -> None:
    """PJUDGE_API_BASE_URLS (the older name of PJUDGE_ENDPOINTS) lists endpoints compared by their
    parsed parts: a look-alike host that merely starts with one is not it."""
    client = new_app(engine, lambda job: None, PJUDGE_API_BASE_URLS="http://llm.internal/v1",
                     PJUDGE_CLIENT_ENDPOINTS=False).test_client()
    ok = post_job(client, make_items(1), profile={"base_url": "http://llm.internal/v1/"})
    bad = [post_job(client, make_items(1), profile={"base_url": url})
           for url in ("https://collector.example/v1", "http://llm.internal/v1.evil", "http://llm.internal.evil/v1",
                       "http://llm.internal:8080/v1", "https://llm.internal/v1")]
    assert ok.status_code == 202 and [r.status_code for r in bad] == [422] * 5
    assert all(error_of(r)["details"][0]["field"] == "profile.base_url" for r in bad)


class _CountingStream(io.RawIOBase):
    """A request body of `size` bytes that is generated on demand and counts what was read."""

    def __init__(self, size: int):
        self.size, self.position, self.read_bytes = size, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the test client measures the stream with seek/tell
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.size - self.position))
        buffer[:n] = b"7" * n
        self.position += n
        self.read_bytes += n
        return n


def test_a_60_mb_body_is_413_without_being_read(client: FlaskClient, engine: Engine) -> None:
    body = b'{"items": [' + b'{"id": "x", "prompt": "p", "response_a": "a", "response_b": "b"},' * (60 * MB // 64)
    body += b"{}]}"
    assert len(body) > 60 * MB
    started = time.perf_counter()
    response = client.post("/v1/jobs", data=body, headers={**AUTH_A, "Content-Type": "application/json"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"
    print(f"\n60 MB body -> 413 in {elapsed * 1000:.1f} ms")
    # With a declared length, nothing of the body is read at all (not even for authentication).
    stream = _CountingStream(60 * MB)
    response = client.post("/v1/jobs", input_stream=stream,  # type: ignore[arg-type]
                           headers={"Content-Type": "application/json", "Content-Length": str(60 * MB)})
    assert response.status_code == 413 and stream.read_bytes == 0
    assert count(engine, Job) == 0


def test_a_streamed_body_without_length_stops_at_the_limit(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_MAX_BODY_MB=1).test_client()
    stream = _CountingStream(60 * MB)
    # A WSGI server that de-chunks a body says so with wsgi.input_terminated (werkzeug's and waitress do).
    response = client.post("/v1/jobs", input_stream=stream, environ_overrides={"wsgi.input_terminated": True},  # type: ignore[arg-type]
                           headers={**AUTH_A, "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert response.status_code == 413
    assert stream.read_bytes <= 2 * MB  # read up to the limit, not the whole upload


# ---------------------------------------------------------------- auth

def test_missing_wrong_and_revoked_keys_are_401(client: FlaskClient, engine: Engine, job_id: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY_A},
                    {"Authorization": f"Basic {KEY_A}"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer " + "k" * 600}):
        response = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 401, headers
        assert error_of(response)["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    key, row = repo.create_api_key(engine, name="ci")
    stored = {"Authorization": f"Bearer {key}"}
    assert post_job(client, make_items(2), headers=stored).status_code == 202
    assert repo.revoke_api_key(engine, row.prefix) == 1
    assert post_job(client, make_items(2), headers=stored).status_code == 401
    assert count(engine, Job) == 2  # the job fixture's and the stored key's; the revoked key made none


def test_bad_keys_are_throttled_per_client_address(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from api import throttle

    now = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: now[0])
    client = new_app(engine, lambda job: None, PJUDGE_AUTH_FAILURES_PER_MINUTE=5).test_client()

    def get(address: str, headers: dict[str, str]) -> Any:
        return client.get("/v1/stats/agreement", headers=headers, environ_base={"REMOTE_ADDR": address})

    bad = {"Authorization": "Bearer guess-0001"}
    for _ in range(3):
        assert get("10.0.0.1", bad).status_code == 401
        now[0] += 1
    assert get("10.0.0.1", AUTH_A).status_code == 200  # a success in between resets nothing
    for _ in range(2):
        assert get("10.0.0.1", {}).status_code == 401
    throttled = get("10.0.0.1", bad)
    assert throttled.status_code == 429
    error = error_of(throttled)
    assert error["code"] == "too_many_requests" and error["details"][0]["field"] == "Authorization"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # Other addresses and unauthenticated routes are served.
    assert get("10.0.0.2", AUTH_A).status_code == 200 and get("10.0.0.2", bad).status_code == 401
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200
    now[0] += 61  # a minute after the failures
    assert get("10.0.0.1", bad).status_code == 401


def test_a_valid_key_behind_a_throttled_shared_address_still_gets_in(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Others' bad keys from the same NAT or proxy lock out neither a key of PJUDGE_API_KEYS nor a
    stored key that authenticated recently; unknown keys get 429 without a database lookup."""
    from api import throttle

    now = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: now[0])
    client = new_app(engine, lambda job: None, PJUDGE_AUTH_FAILURES_PER_MINUTE=30).test_client()
    recent, _ = repo.create_api_key(engine, "used a moment ago")
    idle, _ = repo.create_api_key(engine, "not used this hour")

    def get(key: str) -> int:
        return client.get("/v1/stats/agreement", headers={"Authorization": f"Bearer {key}"},
                          environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code

    assert get(recent) == 200
    lookups: list[str] = []
    active = repo.key_is_active
    monkeypatch.setattr(repo, "key_is_active", lambda e, h: lookups.append(h) or active(e, h))
    for number in range(30):
        assert get(f"guess-{number:04d}") == 401
    assert len(lookups) == 30
    for number in range(100):  # a flood while throttled: no database lookup at all
        assert get(f"flood-{number:04d}") == 429
    assert len(lookups) == 30
    assert get(KEY_A) == 200 and get(recent) == 200
    assert get(idle) == 429  # not known in memory: it waits like a guess
    assert repo.revoke_api_key(engine, recent[:10]) == 1  # revoked: checked, refused, then forgotten
    assert get(recent) == 401 and get(recent) == 429
    now[0] += 61
    assert get(idle) == 200


def test_another_keys_job_is_404_everywhere(client: FlaskClient, engine: Engine, job_id: str) -> None:
    judge_all(engine, job_id)
    for method, path, body in [
        ("get", f"/v1/jobs/{job_id}", None), ("get", f"/v1/jobs/{job_id}/verdicts", None),
        ("post", f"/v1/jobs/{job_id}/labels", [{"id": "item-00000", "human_label": "A"}]),
        ("get", f"/v1/jobs/{job_id}/report", None), ("post", f"/v1/jobs/{job_id}/cancel", None),
        ("get", f"/v1/jobs/{job_id}/export?format=dpo", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=AUTH_B)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"
        # The owner gets an answer (the finished job's cancel is a 409, not a 404).
        assert getattr(client, method)(path, json=body, headers=AUTH_A).status_code in (200, 409), path
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "x" * 5000, "%00"):
        assert client.get(f"/v1/jobs/{missing}", headers=AUTH_A).status_code == 404
    # Another key's stats never include this key's verdicts.
    assert client.get("/v1/stats/agreement", headers=AUTH_B).get_json()["counts"]["items"] == 0


def test_unknown_routes_and_methods_use_the_error_shape(client: FlaskClient) -> None:
    assert error_of(client.get("/v1/nothing", headers=AUTH_A))["code"] == "not_found"
    response = client.delete("/v1/jobs", headers=AUTH_A)
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


# ---------------------------------------------------------------- verdicts

def test_cursor_walk_returns_every_verdict_once_in_order(client: FlaskClient, engine: Engine) -> None:
    response = post_job(client, make_items(253))
    job_id = response.get_json()["job_id"]
    judge_all(engine, job_id, shuffle=True)  # stored out of order, as concurrent workers would
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = f"limit=10&cursor={cursor}" if cursor else "limit=10"
        page = client.get(f"/v1/jobs/{job_id}/verdicts?{query}", headers=AUTH_A).get_json()
        pages += 1
        assert len(page["verdicts"]) <= 10
        seen.extend(v["id"] for v in page["verdicts"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 26
    assert seen == [f"item-{i:05d}" for i in range(253)]
    first = client.get(f"/v1/jobs/{job_id}/verdicts?limit=1", headers=AUTH_A).get_json()["verdicts"][0]
    Verdict.model_validate(first)  # SPEC 1.2 objects, with their calls
    assert {"id", "winner", "p_a", "certainty", "consistent", "abstained", "bpde", "human_label", "judge",
            "calls", "metadata"} <= set(first)
    assert [c["order"] for c in first["calls"]] == ["AB", "BA"]
    default = client.get(f"/v1/jobs/{job_id}/verdicts", headers=AUTH_A).get_json()
    assert len(default["verdicts"]) == 100 and default["next_cursor"] == "99"
    full = client.get(f"/v1/jobs/{job_id}/verdicts?limit=1000", headers=AUTH_A).get_json()
    assert len(full["verdicts"]) == 253 and full["next_cursor"] is None


@pytest.mark.parametrize("query,field", [("cursor=abc", "cursor"), ("cursor=-1", "cursor"), ("cursor=1e3", "cursor"),
                                         ("cursor=" + "9" * 40, "cursor"), ("limit=0", "limit"),
                                         ("limit=1001", "limit"), ("limit=ten", "limit"), ("limit=1.5", "limit"),
                                         ("limit=%00", "limit")])
def test_bad_cursor_or_limit_is_400_naming_it(client: FlaskClient, job_id: str, query: str, field: str) -> None:
    response = client.get(f"/v1/jobs/{job_id}/verdicts?{query}", headers=AUTH_A)
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == field


# ---------------------------------------------------------------- labels

def test_labels_are_attached_and_validated(client: FlaskClient, engine: Engine, job_id: str) -> None:
    judge_all(engine, job_id)
    labels = [{"id": "item-00000", "human_label": "B"}, {"id": "item-00001", "human_label": "tie"},
              {"id": "item-00002", "human_label": None}]
    response = client.post(f"/v1/jobs/{job_id}/labels", json=labels, headers=AUTH_A)
    assert response.status_code == 200 and response.get_json() == {"updated": 3, "labels": 3}
    page = client.get(f"/v1/jobs/{job_id}/verdicts?limit=3", headers=AUTH_A).get_json()["verdicts"]
    assert [v["human_label"] for v in page] == ["B", "tie", None]
    unknown = client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "item-00000", "human_label": "A"},
                                                             {"id": "ghost-1", "human_label": "A"},
                                                             {"id": "ghost-2", "human_label": "B"}], headers=AUTH_A)
    assert unknown.status_code == 422
    error = error_of(unknown)
    assert "ghost-1" in error["message"] and "ghost-2" in error["message"]
    assert [d["field"] for d in error["details"]] == ["[1].id", "[2].id"]
    # Nothing changed: unknown ids reject the whole request.
    assert client.get(f"/v1/jobs/{job_id}/verdicts?limit=1", headers=AUTH_A).get_json()["verdicts"][0][
        "human_label"] == "B"
    invalid = client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "item-00000", "human_label": "A"},
                                                             {"id": "item-00001", "human_label": "C"}], headers=AUTH_A)
    assert invalid.status_code == 422 and error_of(invalid)["details"][0]["field"] == "[1].human_label"
    for body in ({"id": "item-00000"}, [{"id": "item-00000"}], [{"id": 3, "human_label": "A"}], [[]],
                 [{"id": "item-00000", "human_label": "A"}] * 2):
        response = client.post(f"/v1/jobs/{job_id}/labels", json=body, headers=AUTH_A)
        assert response.status_code == 422, body
        error_of(response)


# ---------------------------------------------------------------- cancel

def test_cancel(client: FlaskClient, engine: Engine, job_id: str) -> None:
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert response.status_code == 200 and response.get_json() == {"job_id": job_id, "status": "cancelled"}
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A).status_code == 200  # idempotent
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()["status"] == "cancelled"
    done = post_job(client, make_items(4)).get_json()["job_id"]
    judge_all(engine, done)
    conflict = client.post(f"/v1/jobs/{done}/cancel", headers=AUTH_A)
    assert conflict.status_code == 409 and "done" in error_of(conflict)["message"]


# ---------------------------------------------------------------- export

def test_export_dpo_has_decided_non_abstained_pairs(client: FlaskClient, engine: Engine, job_id: str) -> None:
    outcomes: dict[int, tuple[str | None, float | None, bool]] = {0: ("A", 0.9, False), 1: ("B", 0.1, False),
                                                                   2: ("tie", 0.5, False), 3: (None, None, False),
                                                                   4: ("A", 0.55, True)}
    judge_all(engine, job_id, lambda p, _: outcomes.get(p, ("B", 0.2, False)))
    response = client.get(f"/v1/jobs/{job_id}/export?format=dpo", headers=AUTH_A)
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    items = {i["id"]: i for i in make_items(40)}
    assert [line["id"] for line in lines] == ["item-00000", "item-00001"] + [f"item-{i:05d}" for i in range(5, 40)]
    first, second = lines[0], lines[1]
    assert (first["chosen"], first["rejected"]) == (items["item-00000"]["response_a"], items["item-00000"]["response_b"])
    assert (second["chosen"], second["rejected"]) == (items["item-00001"]["response_b"], items["item-00001"]["response_a"])
    assert first["prompt"] == items["item-00000"]["prompt"] and first["persona"] == items["item-00000"]["persona"]
    assert second["persona"] == items["item-00001"]["persona"]
    no_persona = post_job(client, make_items(2, persona=False)).get_json()["job_id"]
    judge_all(engine, no_persona)
    text = client.get(f"/v1/jobs/{no_persona}/export", headers=AUTH_A).get_data(as_text=True)
    assert all("persona" not in json.loads(line) for line in text.splitlines())
    bad = client.get(f"/v1/jobs/{job_id}/export?format=csv", headers=AUTH_A)
    assert bad.status_code == 400 and error_of(bad)["details"][0]["field"] == "format"


# ---------------------------------------------------------------- report and stats

def test_report_has_the_spec4_keys(client: FlaskClient, engine: Engine, job_id: str) -> None:
    empty = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A)
    assert empty.status_code == 200 and SPEC4_KEYS <= set(empty.get_json())
    judge_all(engine, job_id)
    report = client.get(f"/v1/jobs/{job_id}/report?threshold=0.7&hitl=0.3&group_by=group", headers=AUTH_A).get_json()
    assert SPEC4_KEYS <= set(report)
    assert report["counts"]["items"] == 40 and report["hitl"]["beta"] == 0.3
    assert report["high_certainty"]["threshold"] == 0.7
    assert set(report["by_group"]) == {"0", "1", "2"}
    risk = client.get(f"/v1/jobs/{job_id}/report?target_accuracy=0.6&delta=0.2", headers=AUTH_A).get_json()
    assert {"target", "delta", "threshold", "accepted", "errors", "bound", "coverage", "accuracy"} <= set(
        risk["risk_control"])
    for query, field in [("threshold=2", "threshold"), ("hitl=-1", "hitl"), ("threshold=nan", "threshold"),
                         ("delta=1", "delta"), ("target_accuracy=x", "target_accuracy"),
                         ("treshold=0.7", "treshold")]:
        response = client.get(f"/v1/jobs/{job_id}/report?{query}", headers=AUTH_A)
        assert response.status_code == 400 and error_of(response)["details"][0]["field"] == field


def test_stats_agreement_filters_the_callers_verdicts(client: FlaskClient, engine: Engine) -> None:
    first = post_job(client, make_items(20)).get_json()["job_id"]
    second = post_job(client, make_items(30)).get_json()["job_id"]
    others = post_job(client, make_items(50), headers=AUTH_B).get_json()["job_id"]
    judge_all(engine, first, model="model-one")
    judge_all(engine, second, model="model-two")
    judge_all(engine, others, model="model-one")
    stats = client.get("/v1/stats/agreement", headers=AUTH_A).get_json()
    assert SPEC4_KEYS <= set(stats) and stats["counts"]["items"] == 50
    assert client.get("/v1/stats/agreement?model=model-one", headers=AUTH_A).get_json()["counts"]["items"] == 20
    assert client.get("/v1/stats/agreement?profile=persona-certainty&model=model-two",
                      headers=AUTH_A).get_json()["counts"]["items"] == 30
    assert client.get("/v1/stats/agreement?profile=other", headers=AUTH_A).get_json()["counts"]["items"] == 0
    assert client.get("/v1/stats/agreement?since=2999-01-01", headers=AUTH_A).get_json()["counts"]["items"] == 0
    assert client.get("/v1/stats/agreement?until=2999-01-01T00:00:00%2B02:00",
                      headers=AUTH_A).get_json()["counts"]["items"] == 50
    grouped = client.get("/v1/stats/agreement?group_by=group&model=model-one", headers=AUTH_A).get_json()
    assert sum(g["counts"]["items"] for g in grouped["by_group"].values()) == 20
    for query, field in [("since=yesterday", "since"), ("until=2024-13-01", "until"),
                         ("since=0001-01-01T00:00:00%2B01:00", "since"), ("profile=", "profile")]:
        response = client.get(f"/v1/stats/agreement?{query}", headers=AUTH_A)
        assert response.status_code == 400, query
        assert error_of(response)["details"][0]["field"] == field
    # Summed in SQL: the verdict limit only applies where the verdicts must be loaded, i.e. group_by
    # over a metadata key that is not summarized (here a value too long to be a summary group).
    limited = new_app(engine, lambda job: None, PJUDGE_STATS_MAX_VERDICTS=10).test_client()
    assert limited.get("/v1/stats/agreement?group_by=group", headers=AUTH_A).status_code == 200
    noted = post_job(client, [dict(item, metadata={"note": "x" * 300}) for item in make_items(5)]).get_json()["job_id"]
    judge_all(engine, noted, model="model-one")
    assert client.get("/v1/stats/agreement?group_by=note", headers=AUTH_A).get_json()["by_group"].keys() == {
        "x" * 300, "(missing)"}
    too_many = limited.get("/v1/stats/agreement?group_by=note", headers=AUTH_A)
    assert too_many.status_code == 422 and error_of(too_many)["code"] == "too_many_verdicts"


# ---------------------------------------------------------------- health, metrics, openapi

def test_healthz_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok", "database": "ok"}


def test_metrics_text_exposition(client: FlaskClient, engine: Engine, job_id: str) -> None:
    judge_all(engine, job_id, lambda p, _: (None, None, False) if p < 2 else ("A", 0.9, False))
    client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=AUTH_A)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert 'pjudge_jobs{status="done"} 1' in text and 'pjudge_jobs{status="queued"} 0' in text
    assert "pjudge_verdicts_total 40" in text and "pjudge_calls_total 80" in text
    assert "pjudge_failed_calls_total 4" in text
    assert 'pjudge_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1' in text
    assert 'pjudge_http_requests_total{method="GET",route="/v1/jobs/<job_id>",status="404"} 1' in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
    guarded = new_app(engine, lambda job: None, PJUDGE_METRICS_AUTH="1").test_client()
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers=AUTH_A).status_code == 200


def test_openapi_documents_every_route(app: Flask, client: FlaskClient) -> None:
    document = client.get("/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearer"][
            "description"]}
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue  # /dashboard is HTML for browsers (api/dashboard.py), not part of the JSON API
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
            assert (method, path) in documented
    create = document["paths"]["/v1/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    assert {"PairItem", "JobCreate", "ProfileOverrides", "LabelIn", "Verdict", "ErrorBody", "Report"} <= set(
        document["components"]["schemas"])
    verdicts = document["paths"]["/v1/jobs/{job_id}/verdicts"]["get"]
    assert {p["name"] for p in verdicts["parameters"]} == {"job_id", "cursor", "limit"}
    assert document["paths"]["/healthz"]["get"]["security"] == []
    import openapi_spec_validator  # the `test` extra
    openapi_spec_validator.validate(document)  # a valid OpenAPI 3.1 document


# ---------------------------------------------------------------- secrets stay secret

def test_no_key_appears_in_logs_or_responses(engine: Engine, caplog: pytest.LogCaptureFixture,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    provider_key = "sk-test-provider-secret-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", provider_key)
    monkeypatch.setenv("PJUDGE_API_KEYS", KEY_A)
    monkeypatch.setenv("PJUDGE_API_KEY_ENVS", "OPENAI_API_KEY")
    stored_key, _ = repo.create_api_key(engine, name="logged?")

    def failing_enqueue(job: Any) -> None:
        raise RuntimeError(f"broker refused Authorization: Bearer {KEY_A} with {provider_key}")

    app = create_app(engine, failing_enqueue, {"PROPAGATE_EXCEPTIONS": False})
    client = app.test_client()
    bodies: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for key in (KEY_A, stored_key, "wrong-" + KEY_A, provider_key):
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "k1"}
            for response in (
                client.post("/v1/jobs", json={"items": make_items(3), "profile": {"api_key_env": "OPENAI_API_KEY"}},
                            headers=headers),
                client.post("/v1/jobs", json={"items": make_items(3), "profile": {"api_key_env": provider_key}},
                            headers=headers),
                client.post("/v1/jobs", data=b"{bad json " + key.encode(), headers={**headers,
                                                                                    "Content-Type": "application/json"}),
                client.get("/v1/jobs/nope", headers=headers),
                client.get("/v1/stats/agreement", headers=headers),
                client.get("/metrics"),
            ):
                bodies.append(response.get_data(as_text=True) + str(dict(response.headers)))
        job = repo.find_job_by_idempotency_key(engine, repo.hash_key(KEY_A), "k1")
        assert job is not None
        bodies.append(client.get(f"/v1/jobs/{job.id}", headers=AUTH_A).get_data(as_text=True))
    captured = capsys.readouterr()
    everything = "\n".join(bodies) + caplog.text + captured.out + captured.err
    assert "not enqueued" in caplog.text  # the failing enqueue was logged ...
    for secret in (KEY_A, stored_key, provider_key):
        assert secret not in everything  # ... without any key
