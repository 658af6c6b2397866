"""Webhooks against real parts: Redis, `pjudge worker` processes, SQLite and PostgreSQL, the
simulated LLM, and a receiver on loopback. An ended job is announced once, signed; a receiver
that fails gets retries and one recorded success; one that stays down leaves the job as it ended
and the failure in /deliveries; a worker killed mid-delivery makes no second recorded success."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from standardwebhooks import Webhook

from judge.records import PairItem
from judge.settings import reset_settings
from store import repo, webhooks
from tests.support.api import AUTH_A, KEY_A, make_items, new_app
from tests.support.services import (
    RedisServer,
    Service,
    sim_profile,
)
from tests.support.webhooks import Receiver, closed_port_url

OWNER = repo.hash_key(KEY_A)



@pytest.fixture
def service(tmp_path: Path, database_url: str, redis_server: RedisServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    # The API here and the workers encrypt and decrypt the signing secrets with one server secret.
    monkeypatch.setenv("PJUDGE_SECRET_KEY", "webhook-tests-server-secret")
    reset_settings()
    svc = Service(tmp_path, database_url, redis_server)
    # Receivers on loopback; retries a fraction of a second apart instead of over a day.
    svc.env.update({"PJUDGE_WEBHOOK_ALLOW_PRIVATE": "true", "PJUDGE_WEBHOOK_POLL_S": "0.3",
                    "PJUDGE_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5,0.5,0.5", "PJUDGE_WEBHOOK_TIMEOUT_S": "3",
                    "PJUDGE_WORKER_PROCESSES": "2"})
    yield svc
    svc.stop()


def api(service: Service) -> FlaskClient:
    from worker.tasks import enqueue_job

    return new_app(service.engine, lambda job: enqueue_job(job, service.celery()), PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true",
                   PJUDGE_WEBHOOK_ALLOW_PRIVATE="true").test_client()


def submit(service: Service, sim: Any, url: str, n: int = 12) -> str:
    from worker.tasks import enqueue_job

    items = [PairItem.model_validate(item) for item in make_items(n)]
    job = repo.create_job(service.engine, OWNER, items, sim_profile(sim), batch_size=8, webhook_url=url).job
    enqueue_job(job, service.celery())
    return job.id


def wait_event(client: FlaskClient, job_id: str, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    page: dict[str, Any] = {}
    while time.monotonic() < deadline:
        page = client.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_A).get_json()
        if page["event"] is not None and page["event"]["status"] == status:
            return page
        time.sleep(0.2)
    raise AssertionError(f"the event of job {job_id} is not {status} after {timeout}s: {page}")


def test_an_ended_job_is_announced_once_signed_and_a_cancelled_one_too(service: Service, start_sim) -> None:
    sim = start_sim("--seed", "4")
    service.start_worker(concurrency=4)
    client = api(service)
    profile = {"provider": "openai-compatible", "model": "sim-judge", "base_url": sim.openai_base_url}
    with Receiver() as receiver:
        created = client.post("/v1/jobs", json={"items": make_items(20), "profile": profile,
                                                "webhook_url": receiver.url}, headers=AUTH_A)
        assert created.status_code == 202, created.get_json()
        job_id = created.get_json()["job_id"]
        secret = client.get("/v1/webhook-secret", headers=AUTH_A).get_json()["secret"]
        job = service.wait_done(job_id, 120)
        (request,) = receiver.wait_for(1, 60)
        ended = job.finished_at if job.finished_at.tzinfo else job.finished_at.replace(tzinfo=UTC)
        print(f"\njob.done received {request.wall - ended.timestamp():.2f} s after the job ended "
              "(PJUDGE_WEBHOOK_POLL_S=0.3)")
        payload = Webhook(secret).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == webhooks.event_id(job_id)
        counts = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()["counts"]
        assert payload["type"] == "job.done" and payload["data"]["counts"] == counts
        assert payload["data"]["status"] == job.status == "done" and counts["verdicts"] == 20

        # Cancelled before a worker takes it: announced as job.cancelled, under its own id.
        second = client.post("/v1/jobs", json={"items": make_items(2000), "profile": profile,
                                               "webhook_url": receiver.url}, headers=AUTH_A).get_json()["job_id"]
        assert client.post(f"/v1/jobs/{second}/cancel", headers=AUTH_A).status_code == 200
        received = receiver.wait_for(2, 60)
        time.sleep(2)  # several polls more: nothing is sent twice
        assert len(receiver.received) == 2
    cancelled = Webhook(secret).verify(received[1].body, received[1].headers)
    assert cancelled["type"] == "job.cancelled" and cancelled["data"]["job_id"] == second
    assert received[1].headers["webhook-id"] == webhooks.event_id(second)
    page = wait_event(client, job_id, "delivered", 10)
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in page["deliveries"]] == [(1, True, 204)]


def test_a_receiver_failing_3_times_then_answering_gets_exactly_one_success_recorded(service: Service,
                                                                                   start_sim) -> None:
    sim = start_sim("--seed", "5")
    service.start_worker(concurrency=4)
    client = api(service)
    with Receiver([500, 502, 503]) as receiver:
        job_id = submit(service, sim, receiver.url)
        page = wait_event(client, job_id, "delivered", 180)
        time.sleep(2)  # several polls more
        received = list(receiver.received)
    secret = webhooks.secret_of(service.engine, OWNER)
    assert len(received) == 4
    assert {r.headers["webhook-id"] for r in received} == {webhooks.event_id(job_id)}
    assert all(Webhook(secret or "").verify(r.body, r.headers)["data"]["job_id"] == job_id for r in received)
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in page["deliveries"]] == [
        (1, False, 500), (2, False, 502), (3, False, 503), (4, True, 204)]
    assert client.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_A).get_json() == page
    # Retries came at the schedule's pace (0.5 s, and a poll of 0.3 s), not at once.
    gaps = [b.at - a.at for a, b in zip(received, received[1:], strict=False)]
    assert all(gap >= 0.45 for gap in gaps), gaps


def test_a_receiver_down_for_the_whole_retry_window_leaves_the_job_as_it_ended(service: Service,
                                                                              start_sim) -> None:
    sim = start_sim("--seed", "6")
    service.start_worker(concurrency=4)
    client = api(service)
    job_id = submit(service, sim, closed_port_url())
    done = service.wait_done(job_id, 120)
    page = wait_event(client, job_id, "failed", 120)
    assert [(d["attempt"], d["ok"], d["error"]) for d in page["deliveries"]] == [
        (n, False, "connection refused") for n in range(1, 7)]  # the first attempt and 5 retries
    assert page["deliveries"][-1]["next_retry_at"] is None and page["event"]["delivered_at"] is None
    job = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    assert job["status"] == "done" and job["counts"]["verdicts"] == 12
    assert repo.get_job(service.engine, job_id).finished_at == done.finished_at  # type: ignore[union-attr]


def test_a_worker_killed_mid_delivery_makes_no_second_recorded_success(service: Service, start_sim) -> None:
    sim = start_sim("--seed", "7")
    # The killed worker's task comes back after 5 s, while the attempt's lease (3 s + 5 s) still holds.
    service.env.update({"PJUDGE_VISIBILITY_TIMEOUT": "5", "PJUDGE_WORKER_PROCESSES": "1"})
    first = service.start_worker(concurrency=4)
    client = api(service)
    with Receiver(hold_s=2.5, hold_first=1) as receiver:
        job_id = submit(service, sim, receiver.url)
        receiver.wait_for(1, 180)  # the first attempt is in flight: the receiver holds it
        first.kill9()
        service.start_worker(concurrency=4)
        page = wait_event(client, job_id, "delivered", 180)
        time.sleep(7)  # the redelivered task, and several polls, come and go
        received = list(receiver.received)
    assert len(received) == 2
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"] == webhooks.event_id(job_id)
    assert received[0].body == received[1].body
    final = client.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_A).get_json()
    assert final == page
    assert [(d["attempt"], d["ok"], d["error"]) for d in final["deliveries"]] == [
        (1, False, webhooks.LOST), (2, True, None)]
