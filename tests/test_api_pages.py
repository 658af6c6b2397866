"""Staged jobs (issue 16): POST /v1/jobs {staged: true}, pages of items (JSON and NDJSON) with
idempotent resends, /start, and GET /v1/jobs/{id}/verdicts.jsonl, through Flask's test client on
SQLite and PostgreSQL, with an injected enqueue that records what would go to the workers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from api.app import create_app
from store import repo
from store.models import Job, JobItem, JobPage
from tests.support.api import AUTH_A, AUTH_B, KEY_A, KEY_B, count, error_of, judge_all, make_items

NDJSON = {"Content-Type": "application/x-ndjson"}


class Sent:
    """What the app sent to the workers: whole jobs (enqueue) and ranges (enqueue_range)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.ranges: list[tuple[str, int, int]] = []

    def job(self, job: Job) -> None:
        self.jobs.append(job)

    def range(self, job: Job, start: int, end: int) -> None:
        self.ranges.append((job.id, start, end))


@pytest.fixture
def sent() -> Sent:
    return Sent()


def staged_app(engine: Engine, sent: Sent, **config: Any) -> Flask:
    app = create_app(engine, sent.job, {"PJUDGE_API_KEYS": f"{KEY_A}, {KEY_B}", **config})
    app.extensions["pjudge"].enqueue_range = sent.range
    return app


@pytest.fixture
def client(engine: Engine, sent: Sent) -> FlaskClient:
    return staged_app(engine, sent).test_client()


def new_staged(client: FlaskClient, **body: Any) -> str:
    response = client.post("/v1/jobs", json={"profile": "persona-certainty", "staged": True, **body}, headers=AUTH_A)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == ("queued" if body.get("start_early") else "open")
    return str(response.get_json()["job_id"])


def page(client: FlaskClient, job_id: str, items: list[dict[str, Any]], key: str | None = None,
         headers: dict[str, str] | None = None) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(f"/v1/jobs/{job_id}/items", json={"items": items}, headers={**(headers or AUTH_A), **extra})


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_a_job_filled_in_pages_then_started_holds_every_item_in_order_and_is_sent_once(
        client: FlaskClient, engine: Engine, sent: Sent) -> None:
    items = make_items(250)
    job_id = new_staged(client)
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()["status"] == "open"
    firsts = []
    for n, start in enumerate(range(0, 250, 100)):
        response = page(client, job_id, items[start:start + 100], key=f"page-{n}")
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["status"] == "open"
        firsts.append(body["first_position"])
        assert body["items"] == start + body["added"]
    assert firsts == [0, 100, 200]
    assert sent.jobs == [] and sent.ranges == []  # nothing runs before /start
    response = client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A)
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    assert [job.id for job in sent.jobs] == [job_id] and sent.jobs[0].n_items == 250
    stored = repo.job_items(engine, job_id, 0, 250)
    assert [item.id for _, item in stored] == [item["id"] for item in items]
    again = client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert len(sent.jobs) == 1


def test_a_page_sent_again_under_its_key_adds_nothing_and_another_page_under_it_is_a_409(
        client: FlaskClient, engine: Engine) -> None:
    items = make_items(30)
    job_id = new_staged(client)
    first = page(client, job_id, items[:20], key="k1")
    again = page(client, job_id, items[:20], key="k1")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["first_position"] == first.get_json()["first_position"] == 0
    assert again.get_json()["added"] == 20
    other = page(client, job_id, items[20:], key="k1")
    assert other.status_code == 409
    assert error_of(other)["details"][0]["field"] == "Idempotency-Key"
    assert repo.get_job(engine, job_id).n_items == 20  # type: ignore[union-attr]
    assert count(engine, JobItem) == 20 and count(engine, JobPage) == 1


def test_an_id_of_an_earlier_page_is_a_422_naming_the_line_and_stores_nothing_of_the_page(
        client: FlaskClient, engine: Engine) -> None:
    items = make_items(30)
    job_id = new_staged(client)
    assert page(client, job_id, items[:20]).status_code == 200
    response = page(client, job_id, items[20:] + [items[3]])
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"][0]["field"] == "items[10]" and "item-00003" in error["message"]
    assert repo.get_job(engine, job_id).n_items == 20  # type: ignore[union-attr]
    upload = client.post(f"/v1/jobs/{job_id}/items", data=ndjson(items[20:25] + [items[0]]),
                         headers={**AUTH_A, **NDJSON})
    assert upload.status_code == 422 and error_of(upload)["details"][0]["field"] == "line 6"
    assert count(engine, JobItem) == 20


def test_an_ndjson_upload_is_read_a_line_at_a_time_and_a_bad_line_stores_nothing(
        client: FlaskClient, engine: Engine) -> None:
    items = make_items(40)
    job_id = new_staged(client)
    body = ndjson(items[:10]) + b"\n" + b'{"id": "x", "prompt": "p"}\n' + b"not json\n" + ndjson(items[10:])
    response = client.post(f"/v1/jobs/{job_id}/items", data=body, headers={**AUTH_A, **NDJSON})
    assert response.status_code == 422
    fields = [d["field"] for d in error_of(response)["details"]]
    assert "line 12.response_a" in fields and "line 13" in fields
    assert count(engine, JobItem) == 0
    good = client.post(f"/v1/jobs/{job_id}/items", data=ndjson(items), headers={**AUTH_A, **NDJSON})
    assert good.status_code == 200 and good.get_json()["added"] == 40
    assert [item.id for _, item in repo.job_items(engine, job_id, 0, 40)] == [item["id"] for item in items]


def test_pages_of_a_started_or_cancelled_job_are_409_and_another_keys_job_is_404(client: FlaskClient) -> None:
    items = make_items(10)
    job_id = new_staged(client)
    assert page(client, job_id, items[:5], headers=AUTH_B).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_B).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/verdicts.jsonl", headers=AUTH_B).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A).status_code == 409  # no items yet
    assert page(client, job_id, items[:5], key="p0").status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A).status_code == 202
    late = page(client, job_id, items[5:])
    assert late.status_code == 409 and error_of(late)["details"][0] == {"field": "status", "message": "queued"}
    assert page(client, job_id, items[5:], key="p1").status_code == 409
    assert page(client, job_id, items[:5], key="p0").status_code == 200  # the replay still answers
    cancelled = new_staged(client)
    assert client.post(f"/v1/jobs/{cancelled}/cancel", headers=AUTH_A).status_code == 200
    assert page(client, cancelled, items).status_code == 409
    assert client.post(f"/v1/jobs/{cancelled}/start", headers=AUTH_A).status_code == 409


def test_a_staged_job_takes_no_items_in_its_post_and_a_plain_job_still_needs_them(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json={"staged": True, "items": make_items(2)}, headers=AUTH_A)
    assert response.status_code == 422 and error_of(response)["details"][0]["field"] == "items"
    assert client.post("/v1/jobs", json={"staged": True, "items": []}, headers=AUTH_A).status_code == 202
    assert client.post("/v1/jobs", json={"start_early": True, "items": make_items(2)},
                       headers=AUTH_A).status_code == 422
    assert client.post("/v1/jobs", json={"staged": "yes"}, headers=AUTH_A).status_code == 422
    assert client.post("/v1/jobs", json={"profile": "persona-certainty"}, headers=AUTH_A).status_code == 422


def test_the_limits_per_page_per_job_and_the_daily_quota_apply_to_pages(engine: Engine, sent: Sent) -> None:
    client = staged_app(engine, sent, PJUDGE_MAX_PAGE_ITEMS="10", PJUDGE_MAX_JOB_ITEMS="25",
                        PJUDGE_QUOTA_ITEMS_PER_DAY="40").test_client()
    items = make_items(60)
    job_id = new_staged(client)
    too_big = page(client, job_id, items[:11])
    assert too_big.status_code == 422 and "PJUDGE_MAX_PAGE_ITEMS" in error_of(too_big)["message"]
    for start in (0, 10):
        assert page(client, job_id, items[start:start + 10]).status_code == 200
    over = page(client, job_id, items[20:30])
    assert over.status_code == 422 and "more than 25 per job" in error_of(over)["message"]
    upload = client.post(f"/v1/jobs/{job_id}/items", data=ndjson(items[20:30]), headers={**AUTH_A, **NDJSON})
    assert upload.status_code == 422
    other = new_staged(client)
    for start in (30, 40):
        assert page(client, other, items[start:start + 10]).status_code == 200
    quota = page(client, other, items[50:55])  # 20 + 20 of the last 24 h, 5 more: over 40
    assert quota.status_code == 429 and error_of(quota)["code"] == "quota_exceeded"
    assert repo.get_job(engine, other).n_items == 20  # type: ignore[union-attr]


def test_verdicts_jsonl_streams_every_verdict_as_the_pages_of_verdicts_hold_them(
        client: FlaskClient, engine: Engine) -> None:
    items = make_items(130)
    job_id = new_staged(client)
    client.post(f"/v1/jobs/{job_id}/items", data=ndjson(items), headers={**AUTH_A, **NDJSON})
    client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A)
    judge_all(engine, job_id, shuffle=True)
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()["status"] == "done"
    streamed = client.get(f"/v1/jobs/{job_id}/verdicts.jsonl", headers=AUTH_A)
    assert streamed.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in streamed.data.splitlines()]
    paged: list[Any] = []
    cursor = None
    while True:
        query = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        body = client.get(f"/v1/jobs/{job_id}/verdicts", query_string=query, headers=AUTH_A).get_json()
        paged += body["verdicts"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert lines == paged and len(lines) == 130
    report = client.get(f"/v1/jobs/{job_id}/report", query_string={"group_by": "group"}, headers=AUTH_A)
    assert report.status_code == 200 and set(report.get_json()["by_group"]) == {"0", "1", "2"}


def test_the_summary_plan_of_a_staged_job_is_the_plan_of_the_same_items_in_one_post(
        client: FlaskClient, engine: Engine) -> None:
    items = make_items(120)
    for i, item in enumerate(items):  # one key with more group names than a summary keeps
        item["metadata"]["many"] = f"value-{i}"
    job_id = new_staged(client)
    for start in range(0, 120, 50):
        page(client, job_id, items[start:start + 50])
    client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A)
    whole = client.post("/v1/jobs", json={"items": items}, headers=AUTH_A).get_json()["job_id"]
    plans = [repo.get_job(engine, j).summary_keys for j in (job_id, whole)]  # type: ignore[union-attr]
    assert plans[0] == plans[1] and json.loads(plans[0] or "{}") == {"dataset": True, "group": True, "many": False}


def test_a_job_started_early_sends_each_page_and_is_done_only_after_start(
        client: FlaskClient, engine: Engine, sent: Sent) -> None:
    items = make_items(80)
    job_id = new_staged(client, start_early=True)
    page(client, job_id, items[:50], key="a")
    page(client, job_id, items[:50], key="a")  # a replay sends nothing again
    assert sent.ranges == [(job_id, 0, 50)]
    judge_all(engine, job_id)
    assert repo.job_status(engine, job_id) != "done"  # every item so far judged, but more may come
    page(client, job_id, items[50:], key="b")
    assert sent.ranges[-1] == (job_id, 50, 80)
    judge_all(engine, job_id)
    assert repo.job_status(engine, job_id) != "done"
    response = client.post(f"/v1/jobs/{job_id}/start", headers=AUTH_A)
    assert response.status_code == 202 and response.get_json()["status"] == "done"
    assert sent.jobs == []  # its pages went already


def test_concurrent_pages_of_one_job_take_turns_each_whole_at_contiguous_positions(
        client: FlaskClient, engine: Engine) -> None:
    import threading

    items = make_items(240)
    job_id = new_staged(client)
    answers: list[Any] = []

    def send(thread: int) -> None:
        for n in range(3):
            start = (thread * 3 + n) * 20
            answers.append(page(client, job_id, items[start:start + 20], key=f"t{thread}-{n}").get_json())

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a["first_position"] for a in answers) == list(range(0, 240, 20))
    stored = dict((item.id, position) for position, item in repo.job_items(engine, job_id, 0, 240))
    assert sorted(stored.values()) == list(range(240))
    for start in range(0, 240, 20):  # each page's items side by side, in order
        positions = [stored[item["id"]] for item in items[start:start + 20]]
        assert positions == list(range(positions[0], positions[0] + 20))


def test_a_plan_folded_page_by_page_is_the_plan_of_all_the_items_at_once() -> None:
    import random

    from judge.records import PairItem
    from store import summaries

    rng = random.Random(3)
    for _ in range(20):
        items = [PairItem(id=f"i{i}", prompt="p", response_a="a", response_b="b",
                          metadata={f"k{rng.randint(0, 20)}": rng.choice([None, rng.randint(0, 70), "x" * 300])
                                    for _ in range(3)})
                 for i in range(rng.randint(1, 400))]
        state: summaries.PlanState = {}
        cut = sorted(rng.sample(range(len(items) + 1), min(4, len(items) + 1)))
        for start, end in zip([0, *cut], [*cut, len(items)], strict=True):
            page_state: summaries.PlanState = {}
            summaries.add_to_plan_state(page_state, items[start:end])
            summaries.merge_plan_states(state, page_state)
        assert summaries.plan_of_state(state) == summaries.plan_group_keys(items)
