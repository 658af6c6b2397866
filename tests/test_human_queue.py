"""The human queue (issue 14, point 4): GET /v1/jobs/{id}/queue lists the items waiting for a human
label, highest BPDE first, cursor-paged; labels complete them; GET /v1/jobs/{id} counts them; the
job report carries the cascade's per-stage section. On SQLite and PostgreSQL (the `engine`
fixture), with cascade verdicts built by hand and stored as a worker stores them."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.engine import Engine

from calibration.from_counts import json_safe
from calibration.stages import queue_key, stage_report
from judge.profiles import load_judging
from judge.records import Verdict
from store import repo
from store.models import Job
from store.queue import cascade_then
from tests.support.api import AUTH_A, AUTH_B, error_of, judge_all, make_items, new_app, post_job
from tests.support.verdicts import cascade_verdict, small_cascade


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    app: Flask = new_app(engine, lambda job: None)
    return app.test_client()


def items_of(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    items = []
    for i, v in enumerate(verdicts):
        item: dict[str, Any] = {"id": v.id, "prompt": f"Question {i}?", "response_a": f"Answer A {i}",
                                "response_b": f"Answer B {i}", "persona": "The person is 30-39 years old.",
                                "metadata": {"n": i}}
        if v.human_label is not None:
            item["human_label"] = v.human_label
        items.append(item)
    return items


def cascade_profile(then: str = "human") -> dict[str, Any]:
    cascade = load_judging({"name": "three-stage", "then": then, "cascade": [
        {"profile": "persona-certainty", "threshold": 0.8}, {"profile": "persona-certainty", "threshold": 0.9},
        {"profile": "persona-certainty", "threshold": 0.95}]})
    return cascade.stored()  # type: ignore[union-attr]  # load_judging of a cascade object


def cascade_job(client: FlaskClient, engine: Engine, verdicts: list[Verdict], then: str = "human") -> str:
    """A job of these verdicts' items whose stored profile is a cascade ending in `then`, with the
    verdicts stored through repo.record_verdicts in a few deliveries, as a worker's batches."""
    response = post_job(client, items_of(verdicts), profile="persona-certainty")
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(profile_json=json.dumps(cascade_profile(then))))
    indexed = list(enumerate(verdicts))
    for start in range(0, len(indexed), 4):
        repo.record_verdicts(engine, job_id, indexed[start:start + 4])
    return job_id


def queue_ids(client: FlaskClient, job_id: str, limit: int = 100, auth: dict[str, str] = AUTH_A) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(f"/v1/jobs/{job_id}/queue?{query}", headers=auth)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        assert len(page["items"]) <= limit
        ids += [entry["item"]["id"] for entry in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def awaiting(client: FlaskClient, job_id: str) -> int:
    counts = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()["counts"]
    return int(counts["awaiting_label"])


def test_cascade_then_reads_both_profile_forms() -> None:
    assert cascade_then(json.dumps(cascade_profile("human"))) == "human"
    assert cascade_then(json.dumps(cascade_profile("abstain"))) == "abstain"
    assert cascade_then(json.dumps({"name": "x", "cascade": []})) == "human"  # SPEC 2.1's default
    assert cascade_then(json.dumps({"name": "persona-certainty", "provider": "openai"})) is None


def test_queue_lists_escalated_unlabelled_items_null_bpde_first_then_highest(client: FlaskClient,
                                                                             engine: Engine) -> None:
    verdicts = small_cascade()
    job_id = cascade_job(client, engine, verdicts)
    page = client.get(f"/v1/jobs/{job_id}/queue", headers=AUTH_A).get_json()
    # i5, i7, i8 are escalated and unlabelled (i6 is labelled): null BPDE first, then 0.69 by position.
    assert [e["item"]["id"] for e in page["items"]] == ["i7", "i5", "i8"]
    assert page["next_cursor"] is None
    first = page["items"][1]
    assert first["item"] == {"id": "i5", "prompt": "Question 5?", "response_a": "Answer A 5",
                             "response_b": "Answer B 5", "persona": "The person is 30-39 years old.",
                             "metadata": {"n": 5}}
    v = verdicts[5]
    assert first["verdict"] == {"winner": v.winner, "p_a": v.p_a, "certainty": v.certainty, "bpde": v.bpde,
                                "abstained": True, "stage": None,
                                "stages": [s.model_dump(mode="json") for s in v.stages or []]}
    assert awaiting(client, job_id) == 3


def test_labels_complete_items_and_the_job_counts_those_left(client: FlaskClient, engine: Engine) -> None:
    job_id = cascade_job(client, engine, small_cascade())
    response = client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "i5", "human_label": "A"}], headers=AUTH_A)
    assert response.status_code == 200, response.get_json()
    assert queue_ids(client, job_id) == ["i7", "i8"] and awaiting(client, job_id) == 2
    # Labelling an accepted item changes nothing in the queue.
    client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "i3", "human_label": "B"}], headers=AUTH_A)
    assert queue_ids(client, job_id) == ["i7", "i8"] and awaiting(client, job_id) == 2
    client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "i7", "human_label": "tie"},
                                                   {"id": "i8", "human_label": "B"}], headers=AUTH_A)
    assert queue_ids(client, job_id) == [] and awaiting(client, job_id) == 0
    # A label taken back (null) puts the item back.
    client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": "i8", "human_label": None}], headers=AUTH_A)
    assert queue_ids(client, job_id) == ["i8"] and awaiting(client, job_id) == 1


def test_then_abstain_queues_no_escalated_item(client: FlaskClient, engine: Engine) -> None:
    verdicts = small_cascade()
    job_id = cascade_job(client, engine, verdicts, then="abstain")
    assert queue_ids(client, job_id) == [] and awaiting(client, job_id) == 0
    report = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    assert report["cascade_stages"]["escalated"] == {"items": 4, "labelled": 1, "awaiting_label": 0}
    assert report["cascade_stages"]["queue"] == {"waiting": 0, "top": []}


def test_abstained_items_of_a_single_profile_are_queued(client: FlaskClient, engine: Engine) -> None:
    items = make_items(30)
    job_id = post_job(client, items, profile="persona-certainty").get_json()["job_id"]
    judge_all(engine, job_id, lambda p, _: ("A", 0.55, True) if p % 3 == 0 else ("A", 0.9, False))
    expected = [item["id"] for p, item in enumerate(items) if p % 3 == 0 and "human_label" not in item]
    assert expected  # make_items leaves some items unlabelled
    assert queue_ids(client, job_id, limit=2) == expected  # every BPDE 0.0: input order
    assert awaiting(client, job_id) == len(expected)
    entry = client.get(f"/v1/jobs/{job_id}/queue?limit=1", headers=AUTH_A).get_json()["items"][0]
    assert entry["verdict"]["stage"] is None and entry["verdict"]["stages"] is None
    assert "cascade_stages" not in client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()


def test_cursor_walk_visits_every_waiting_item_once_in_bpde_order(client: FlaskClient, engine: Engine) -> None:
    rng = random.Random(14)
    verdicts = []
    for i in range(150):
        bpde = rng.choice([None, 0.0, 0.5623351446, 0.6931471806, 1.0986122887, rng.random()])
        label = rng.choice([None, None, "A", "B"])
        if rng.random() < 0.3:
            verdicts.append(cascade_verdict(f"x{i:03d}", [("A", 0.95, 0.001)], 0, label, bpde=bpde))
        else:
            stages = [("A", 0.6, 0.001), ("B", 0.3, 0.01)]
            verdicts.append(cascade_verdict(f"x{i:03d}", stages, None, label, bpde=bpde))
    job_id = cascade_job(client, engine, verdicts)
    waiting = [(queue_key(v.bpde, p), v.id) for p, v in enumerate(verdicts)
               if v.abstained and v.human_label is None]
    expected = [item_id for _, item_id in sorted(waiting)]
    assert len(expected) > 40
    for limit in (1, 7, 1000):
        assert queue_ids(client, job_id, limit=limit) == expected
    assert awaiting(client, job_id) == len(expected)
    # Items labelled between two pages leave the queue; the walk goes on from the cursor.
    page = client.get(f"/v1/jobs/{job_id}/queue?limit=10", headers=AUTH_A).get_json()
    assert [e["item"]["id"] for e in page["items"]] == expected[:10]
    labelled = expected[5:15]
    client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": i, "human_label": "A"} for i in labelled], headers=AUTH_A)
    rest = client.get(f"/v1/jobs/{job_id}/queue?limit=1000&cursor={page['next_cursor']}", headers=AUTH_A).get_json()
    assert [e["item"]["id"] for e in rest["items"]] == expected[15:]
    assert awaiting(client, job_id) == len(expected) - 10


def test_another_tenant_gets_404_and_a_bad_cursor_400(client: FlaskClient, engine: Engine) -> None:
    job_id = cascade_job(client, engine, small_cascade())
    response = client.get(f"/v1/jobs/{job_id}/queue", headers=AUTH_B)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH_B).status_code == 404
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/queue", headers=AUTH_A).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/queue").status_code == 401
    for query, field in (("cursor=abc", "cursor"), ("cursor=999999", "cursor"), ("limit=0", "limit"),
                         ("limit=1001", "limit"), ("colour=red", "colour")):
        response = client.get(f"/v1/jobs/{job_id}/queue?{query}", headers=AUTH_A)
        assert response.status_code == 400, query
        assert [d["field"] for d in error_of(response)["details"]] == [field], query


def test_the_job_report_has_the_same_stage_section_as_the_verdicts(client: FlaskClient, engine: Engine) -> None:
    verdicts = small_cascade()
    job_id = cascade_job(client, engine, verdicts)
    report = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    assert report["cascade_stages"] == json_safe(stage_report(verdicts))
    assert report["cascade_stages"]["stages"][1]["reached"] == 7
    # The fallback that loads the verdicts (group_by over a key not summarized) gives the same section.
    grouped = client.get(f"/v1/jobs/{job_id}/report?group_by=nowhere", headers=AUTH_A).get_json()
    assert grouped["cascade_stages"] == report["cascade_stages"]


def test_a_single_judge_job_report_has_no_stage_section(client: FlaskClient, engine: Engine) -> None:
    job_id = post_job(client, make_items(12), profile="persona-certainty").get_json()["job_id"]
    judge_all(engine, job_id)
    report = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    assert "cascade_stages" not in report

