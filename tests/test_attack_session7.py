"""Hostile requests to what session 6 added (issue 16's staged jobs, webhooks and exports; issue
17's stats per day and dashboard groups), through Flask's test client on SQLite and PostgreSQL:
each answer is a 4xx in the one error shape naming the field (or line), nothing is half stored,
and no tenant reaches another's data or a quota it has used up."""

from __future__ import annotations

import gzip
import io
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from store import repo
from store.models import Job, JobItem, JobPage, utcnow
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
    unqueued_client,
)

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return unqueued_client(engine)


def staged(client: FlaskClient, headers: dict[str, str] = AUTH_A) -> str:
    response = client.post("/v1/jobs", json={"profile": "persona-certainty", "staged": True}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["job_id"])


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def upload(client: FlaskClient, job_id: str, body: bytes, **headers: str) -> Any:
    return client.post(f"/v1/jobs/{job_id}/items", data=body, headers={**AUTH_A, **NDJSON, **headers})


def fields(response: Any) -> list[str | None]:
    return [detail["field"] for detail in error_of(response)["details"]]


# ---------------------------------------------------------------- staged jobs: bodies

def test_a_compressed_body_is_a_415_naming_content_encoding_and_stores_nothing(client: FlaskClient,
                                                                                engine: Engine) -> None:
    items = make_items(3)
    job_id = staged(client)
    gzipped = {"Content-Encoding": "gzip"}
    answers = [
        upload(client, job_id, gzip.compress(ndjson(items)), **gzipped),
        client.post(f"/v1/jobs/{job_id}/items", data=gzip.compress(json.dumps({"items": items}).encode()),
                    headers={**AUTH_A, "Content-Type": "application/json", **gzipped}),
        client.post("/v1/jobs", data=gzip.compress(json.dumps({"items": items}).encode()),
                    headers={**AUTH_A, "Content-Type": "application/json", "Content-Encoding": "br"}),
    ]
    for response in answers:
        assert response.status_code == 415, response.get_data(as_text=True)
        assert error_of(response)["code"] == "unsupported_media_type" and fields(response) == ["Content-Encoding"]
    assert count(engine, JobItem) == 0 and repo.get_job(engine, job_id).n_items == 0  # type: ignore[union-attr]
    assert upload(client, job_id, ndjson(items), **{"Content-Encoding": "identity"}).status_code == 200


def test_an_upload_over_its_limit_is_a_413_that_names_the_uploads_limit(engine: Engine) -> None:
    client = unqueued_client(engine, PJUDGE_MAX_BODY_MB="0.01", PJUDGE_MAX_UPLOAD_MB="0.02")
    job_id = staged(client)
    limit = int(0.02 * 1024 * 1024)
    body = ndjson(make_items(200))
    assert len(body) > limit
    declared = upload(client, job_id, body)
    # A WSGI server that de-chunks a body says so with wsgi.input_terminated (tests/test_api.py).
    chunked = client.post(f"/v1/jobs/{job_id}/items", input_stream=io.BytesIO(body),
                          environ_overrides={"wsgi.input_terminated": True},
                          headers={**AUTH_A, **NDJSON, "Transfer-Encoding": "chunked"})
    for response in (declared, chunked):
        assert response.status_code == 413
        assert error_of(response)["message"] == f"request body too large (limit {limit} bytes)"
    assert count(engine, JobItem) == 0
    big_json = client.post("/v1/jobs", data=b"x" * limit, headers={**AUTH_A, "Content-Type": "application/json"})
    assert error_of(big_json)["message"] == f"request body too large (limit {int(0.01 * 1024 * 1024)} bytes)"


def test_a_page_past_the_jobs_item_limit_names_the_first_item_too_many_and_stores_none(engine: Engine) -> None:
    client = unqueued_client(engine, PJUDGE_MAX_JOB_ITEMS="10", PJUDGE_MAX_PAGE_ITEMS="10")
    items = make_items(12)
    job_id = staged(client)
    assert client.post(f"/v1/jobs/{job_id}/items", json={"items": items[:7]}, headers=AUTH_A).status_code == 200
    page = client.post(f"/v1/jobs/{job_id}/items", json={"items": items[7:11]}, headers=AUTH_A)
    assert page.status_code == 422 and fields(page) == ["items[3]"]  # 7 + 3 fit, the 4th is the 11th
    lines = upload(client, job_id, b"\n" + ndjson(items[7:12]))  # a blank line first: items on lines 2-6
    assert lines.status_code == 422 and fields(lines) == ["line 5"]
    assert repo.get_job(engine, job_id).n_items == 7 and count(engine, JobItem) == 7  # type: ignore[union-attr]
    exact = client.post(f"/v1/jobs/{job_id}/items", json={"items": items[7:10]}, headers=AUTH_A)
    assert exact.status_code == 200 and exact.get_json()["items"] == 10


def test_a_json_page_with_an_unknown_field_names_it(client: FlaskClient, engine: Engine) -> None:
    job_id = staged(client)
    response = client.post(f"/v1/jobs/{job_id}/items", json={"items": make_items(2), "itmes": [], "x" * 500: 1},
                           headers=AUTH_A)
    assert response.status_code == 422 and fields(response) == ["itmes", "x" * 100]
    assert count(engine, JobItem) == 0


def test_an_upload_declared_in_another_charset_is_a_400_naming_content_type(client: FlaskClient,
                                                                             engine: Engine) -> None:
    items = make_items(2)
    job_id = staged(client)
    for charset in ("utf-16", "latin-1"):
        body = ndjson(items).decode().encode(charset)
        response = upload(client, job_id, body, **{"Content-Type": f"application/x-ndjson; charset={charset}"})
        assert response.status_code == 400 and fields(response) == ["Content-Type"]
    assert count(engine, JobItem) == 0
    utf8 = upload(client, job_id, ndjson(items), **{"Content-Type": "application/x-ndjson; charset=UTF-8"})
    assert utf8.status_code == 200 and utf8.get_json()["added"] == 2


@pytest.mark.parametrize(("line", "field"), [
    (b"[1, 2]", "line 2"), (b"7", "line 2"), (b"null", "line 2"), (b'"text"', "line 2"),
    (b'{"id": "\xff\xfe", "prompt": "p", "response_a": "a", "response_b": "b"}', "line 2"),
    (b'{"id": 5, "prompt": "p", "response_a": "a", "response_b": "b"}', "line 2.id"),
    (b'{"id": "n", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": NaN}}', "line 2"),
    (b'{"id": "n", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": 1e999}}', "line 2"),
    (b'{"id": "n", "prompt": "p", "response_a": "a", "response_b": "b", "surprise": 1}', "line 2.surprise"),
    (b'{"id": "n", "prompt": "p", "response_a": "a"}', "line 2.response_b"),
    (b'{"id": "n\\u0000", "prompt": "p", "response_a": "a", "response_b": "b"}', "line 2"),
    (b'\xef\xbb\xbf{"id": "n", "prompt": "p", "response_a": "a", "response_b": "b"}', "line 2"),  # BOM mid-body
    (b'{"id": "item-00000", "prompt": "p", "response_a": "a", "response_b": "b"}', "line 2"),  # id of line 1
])
def test_every_bad_ndjson_line_is_a_422_naming_it_and_the_upload_stores_nothing(
        client: FlaskClient, engine: Engine, line: bytes, field: str) -> None:
    items = make_items(2)
    job_id = staged(client)
    response = upload(client, job_id, ndjson(items[:1]) + line + b"\r\n" + ndjson(items[1:]))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert fields(response)[0] == field
    assert count(engine, JobItem) == 0
    crlf = upload(client, job_id, b"\xef\xbb\xbf" + ndjson(items).replace(b"\n", b"\r\n") + b"\r\n\r\n")
    assert crlf.status_code == 200 and crlf.get_json()["added"] == 2  # a leading BOM, CRLF, blank lines



def test_concurrent_pages_under_one_key_store_it_once_and_concurrent_starts_send_the_job_once(engine: Engine) -> None:
    sent: list[Any] = []
    app = new_app(engine, sent.append)
    app.extensions["pjudge"].enqueue_range = lambda job, start, end: None
    job_id = staged(app.test_client())
    items = make_items(50)
    answers: list[Any] = []

    def post(path: str, **kwargs: Any) -> None:
        response = app.test_client().post(path, **kwargs)
        answers.append((response.status_code, response.headers.get("Idempotent-Replayed")))

    def together(path: str, **kwargs: Any) -> list[Any]:
        answers.clear()
        threads = [threading.Thread(target=post, args=(path,), kwargs=kwargs) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(answers, key=lambda answer: (answer[0], answer[1] or ""))

    page = together(f"/v1/jobs/{job_id}/items", json={"items": items}, headers={**AUTH_A, "Idempotency-Key": "one"})
    assert page == [(200, None)] + [(200, "true")] * 5
    assert count(engine, JobItem) == 50 and count(engine, JobPage) == 1
    assert together(f"/v1/jobs/{job_id}/start", headers=AUTH_A) == [(200, "true")] * 5 + [(202, None)]
    assert [job.id for job in sent] == [job_id]

# ---------------------------------------------------------------- staged jobs: the daily quota

def _age(engine: Engine, job_ids: list[str], hours: float) -> None:
    """Make jobs look created (and last counted in the quota) `hours` ago."""
    then = utcnow() - timedelta(hours=hours)
    with engine.begin() as conn:
        conn.execute(update(Job).where(col(Job.id).in_(job_ids)).values(created_at=then, quota_at=then))


def _counted_from(engine: Engine, job_id: str) -> timedelta:
    job = repo.get_job(engine, job_id)
    assert job is not None and job.quota_at is not None
    quota_at = job.quota_at if job.quota_at.tzinfo is not None else job.quota_at.replace(tzinfo=utcnow().tzinfo)
    return utcnow() - quota_at


def test_old_empty_staged_jobs_filled_later_count_in_the_daily_quota_from_their_pages(engine: Engine) -> None:
    client = unqueued_client(engine, PJUDGE_QUOTA_ITEMS_PER_DAY="10")
    items = make_items(30)
    old = [staged(client) for _ in range(3)]
    _age(engine, old, 25)  # made a day ago, still empty: outside any window now
    assert client.post(f"/v1/jobs/{old[0]}/items", json={"items": items[:10]}, headers=AUTH_A).status_code == 200
    assert _counted_from(engine, old[0]) < timedelta(minutes=5)  # counts from its page, not its creation
    for job_id in old[1:]:
        response = client.post(f"/v1/jobs/{job_id}/items", json={"items": items[10:11]}, headers=AUTH_A)
        assert response.status_code == 429 and error_of(response)["code"] == "quota_exceeded", response.get_json()
    assert count(engine, JobItem) == 10
    over = post_job(client, items[10:11])
    assert over.status_code == 429 and error_of(over)["code"] == "quota_exceeded"
    # Filled just before its creation's window ends and again after: the job still counts (no 2x).
    unlimited = unqueued_client(engine)
    other = staged(unlimited, AUTH_B)
    _age(engine, [other], 23.9)
    quota_b = unqueued_client(engine, PJUDGE_QUOTA_ITEMS_PER_DAY="10")
    assert quota_b.post(f"/v1/jobs/{other}/items", json={"items": items[:10]}, headers=AUTH_B).status_code == 200
    with engine.begin() as conn:  # its creation leaves the window; its page does not
        conn.execute(update(Job).where(col(Job.id) == other).values(created_at=utcnow() - timedelta(hours=30)))
    assert post_job(quota_b, items[10:11], headers=AUTH_B).status_code == 429


def test_a_staged_job_started_a_day_after_its_creation_counts_its_cost_from_its_start(engine: Engine) -> None:
    client = unqueued_client(engine, PJUDGE_QUOTA_COST_PER_DAY="1.0")
    job_id, waiting = staged(client), staged(client)
    for each in (job_id, waiting):
        assert client.post(f"/v1/jobs/{each}/items", json={"items": make_items(4)}, headers=AUTH_A).status_code == 200
    _age(engine, [job_id], 25)
    assert client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A).status_code == 202
    assert _counted_from(engine, job_id) < timedelta(minutes=5)
    with engine.begin() as conn:  # what its calls cost: it counts now, though created a day ago
        conn.execute(update(Job).where(col(Job.id) == job_id).values(cost_usd=1.0))
    assert repo.cost_in_quota_window(engine, repo.get_job(engine, job_id).owner) == pytest.approx(1.0)  # type: ignore[union-attr]  # the job exists
    over = post_job(client, make_items(1))
    assert over.status_code == 429 and error_of(over)["code"] == "quota_exceeded"
    # With the cost quota spent, a staged job takes no page and is not started (as no new job is posted).
    page = client.post(f"/v1/jobs/{waiting}/items", json={"items": make_items(6)[4:]}, headers=AUTH_A)
    assert page.status_code == 429 and error_of(page)["code"] == "quota_exceeded"
    refused = client.post(f"/v1/jobs/{waiting}/start", headers=AUTH_A)
    assert refused.status_code == 429 and error_of(refused)["code"] == "quota_exceeded"
    assert refused.headers["Retry-After"].isdigit()
    assert client.get(f"/v1/jobs/{waiting}", headers=AUTH_A).get_json()["status"] == "open"
    unlimited = unqueued_client(engine)  # without a quota nothing is counted
    assert unlimited.post(f"/v1/jobs/{waiting}/start", headers=AUTH_A).status_code == 202


def test_a_key_holds_at_most_max_open_jobs_staged_jobs_open_to_pages(engine: Engine) -> None:
    client = unqueued_client(engine, PJUDGE_MAX_OPEN_JOBS="2")
    body = {"profile": "persona-certainty", "staged": True}
    first = client.post("/v1/jobs", json=body, headers={**AUTH_A, "Idempotency-Key": "first"})
    early = client.post("/v1/jobs", json={**body, "start_early": True}, headers=AUTH_A)
    assert first.status_code == 202 and early.status_code == 202
    refused = client.post("/v1/jobs", json=body, headers=AUTH_A)
    assert refused.status_code == 409 and fields(refused) == ["staged"], refused.get_json()
    assert "PJUDGE_MAX_OPEN_JOBS" in error_of(refused)["message"]
    assert count(engine, Job) == 2
    replay = client.post("/v1/jobs", json=body, headers={**AUTH_A, "Idempotency-Key": "first"})
    assert replay.status_code == 200 and replay.get_json()["job_id"] == first.get_json()["job_id"]
    assert post_job(client, make_items(1)).status_code == 202  # a job with its items is never open
    assert staged(client, AUTH_B)  # another key has its own count
    assert client.post(f"/v1/jobs/{first.get_json()['job_id']}/cancel", headers=AUTH_A).status_code == 200
    assert staged(client)  # a cancelled job is open no more


# ---------------------------------------------------------------- webhooks

def test_a_delivery_cursor_past_every_row_id_is_an_empty_page(client: FlaskClient) -> None:
    job_id = post_job(client, make_items(1), webhook_url="http://93.184.216.34/hook").get_json()["job_id"]
    for cursor in ("2147483647", "2147483648", "999999999999999999"):
        page = client.get(f"/v1/jobs/{job_id}/deliveries?cursor={cursor}", headers=AUTH_A)
        assert page.status_code == 200, page.get_data(as_text=True)
        assert page.get_json()["deliveries"] == [] and page.get_json()["next_cursor"] is None
    assert client.get(f"/v1/jobs/{job_id}/deliveries?cursor={cursor}", headers=AUTH_B).status_code == 404



def test_a_webhook_url_with_a_non_ascii_path_is_delivered_percent_encoded(engine: Engine) -> None:
    from tests.support.webhooks import Receiver
    from worker import webhooks as delivery

    client = unqueued_client(engine, PJUDGE_WEBHOOK_ALLOW_PRIVATE="true")
    with Receiver([200]) as receiver:
        url = receiver.url + "/hooks/ünïcode%2Fkept"
        assert post_job(client, make_items(1), webhook_url=url).status_code == 202  # taken at POST...
        outcome = delivery.post(url, b"{}", {"content-type": "application/json"}, 2.0, allow_private=True)
    assert (outcome.ok, outcome.status_code, outcome.error) == (True, 200, None)  # ...so it must be deliverable
    assert len(receiver.received) == 1

# ---------------------------------------------------------------- stats and the dashboard

def sign_in(client: FlaskClient) -> None:
    import re

    page = client.get("/dashboard/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    assert client.post("/dashboard/login", data={"key": KEY_A, "csrf_token": token.group(1)}).status_code == 302


@pytest.mark.parametrize("query", ["profile=a%00b", "model=%00", "group_by=key%00", "since=2025-01-01%00"])
def test_a_nul_in_a_dashboard_filter_is_a_400_naming_it(client: FlaskClient, engine: Engine, query: str) -> None:
    judge_all(engine, post_job(client, make_items(6)).get_json()["job_id"])
    sign_in(client)
    name = query.split("=")[0]
    for path in ("/dashboard/data/groups", "/dashboard/data/overview", "/dashboard/groups", "/dashboard/"):
        if name == "group_by" and "groups" not in path:
            continue
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, response.get_data(as_text=True)[:300])
        assert fields(response) == [name]
    api = client.get(f"/v1/stats/agreement?{query}", headers=AUTH_A)
    assert api.status_code == 400 and fields(api) == [name]


@pytest.mark.parametrize(("query", "field"), [
    ("since=9999-12-31T23:30:00Z", "since"), ("until=9999-12-31T23:30:00Z&per_day=true", "until"),
    ("until=0001-01-01&per_day=true", "until"), ("since=0001-01-01T00:30:00Z", "since"),
])
def test_times_at_the_ends_of_the_calendar_are_a_400_naming_them(client: FlaskClient, engine: Engine, query: str,
                                                                 field: str) -> None:
    judge_all(engine, post_job(client, make_items(6)).get_json()["job_id"])
    api = client.get(f"/v1/stats/agreement?{query}", headers=AUTH_A)
    assert api.status_code == 400 and fields(api) == [field] and "out of range" in error_of(api)["message"]
    sign_in(client)
    page = client.get(f"/dashboard/data/overview?{query.split('&')[0]}")
    assert page.status_code == 400 and fields(page) == [field]
    wide = client.get("/v1/stats/agreement?since=0001-01-02&until=9999-12-30&per_day=true", headers=AUTH_A)
    assert wide.status_code == 200 and wide.get_json()["counts"]["items"] == 6
    assert len(wide.get_json()["per_day"]) == 62  # the last days of the range


def test_a_label_from_the_dashboard_with_a_nul_or_an_unknown_id_is_a_422_naming_id(client: FlaskClient,
                                                                                   engine: Engine) -> None:
    import re

    job_id = post_job(client, make_items(4)).get_json()["job_id"]
    judge_all(engine, job_id)
    sign_in(client)
    page = client.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    for item_id in ("item-00001\x00", "no-such-item"):
        response = client.post(f"/dashboard/jobs/{job_id}/labels",
                               data={"id": item_id, "human_label": "A", "csrf_token": token.group(1)})
        assert response.status_code == 422, response.get_data(as_text=True)
        assert error_of(response)["code"] == "invalid_input" and fields(response) == ["id"]



def test_a_query_parameter_given_twice_is_a_400_naming_it(client: FlaskClient) -> None:
    job_id = post_job(client, make_items(2)).get_json()["job_id"]
    for path in (f"/v1/jobs/{job_id}/export?as=jsonl&as=parquet", "/v1/stats/agreement?since=2026-01-01&since=2027-01-01",
                 f"/v1/jobs/{job_id}/verdicts?limit=1&limit=500"):
        response = client.get(path, headers=AUTH_A)
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        assert error_of(response)["code"] == "bad_request" and len(fields(response)) == 1
        assert "more than once" in error_of(response)["details"][0]["message"]
    assert client.get(f"/v1/jobs/{job_id}/verdicts?limit=1", headers=AUTH_A).status_code == 200
