"""Webhooks in one process: the webhook_url rules (422 naming the field), the event's life in the
database (armed once, attempts leased one at a time, retried on the schedule, given up), the
signature, the delivery log and the secret over HTTP. With worker processes and Redis:
tests/test_webhooks_service.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import col
from standardwebhooks import Webhook, WebhookVerificationError

from judge.profiles import load_profile
from judge.records import PairItem
from judge.settings import Settings
from store import repo, webhooks
from store.models import Job, WebhookDelivery, WebhookEvent, WebhookSecret, utcnow
from tests.support.api import AUTH_A, AUTH_B, KEY_A, count, error_of, judge_all, make_items, new_app, post_job
from tests.support.personalization import response_lines
from tests.support.webhooks import Receiver, closed_port_url
from worker import webhooks as delivery

OWNER = repo.hash_key(KEY_A)
REFUSED = ("this server does not post webhooks to this host (it must resolve to public addresses unless the "
           "operator sets PJUDGE_WEBHOOK_ALLOW_PRIVATE)")
HOOK = "http://127.0.0.1:9/hooks/pjudge"  # never called in the tests that use it


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return new_app(engine, lambda job: None).test_client()


@pytest.fixture
def private_app(engine: Engine) -> Flask:
    """An app whose operator lets webhooks reach loopback addresses (the receivers of the tests)."""
    return new_app(engine, lambda job: None, PJUDGE_WEBHOOK_ALLOW_PRIVATE="true")


def config(schedule: tuple[float, ...] = (0, 0, 0), timeout: float = 2.0) -> Settings:
    return Settings(webhook_retry_schedule=schedule, webhook_allow_private=True, webhook_timeout_s=timeout)


def ended_job(engine: Engine, url: str = HOOK, n: int = 6) -> str:
    """A job with a webhook, judged to the end (done) as a worker would store it."""
    items = [PairItem.model_validate(item) for item in make_items(n)]
    job = repo.create_job(engine, OWNER, items, load_profile("persona-certainty"), webhook_url=url).job
    judge_all(engine, job.id)
    return job.id


def arm(engine: Engine) -> list[str]:
    sent: list[str] = []
    delivery.poll_once(engine, sent.append, config())
    return sent


# ---------------------------------------------------------------- the URL rules

@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/hook", "must be an http or https URL"),
    (12, "must be an http or https URL"),
    ("https://user:password@example.com/hook", "must not contain a user name or password"),
    ("https://example.com/hook?token=1", "must not have a query or fragment"),
    ("http://127.0.0.1:8080/hook", REFUSED),
    ("http://[::1]/hook", REFUSED),
    ("http://localhost/hook", REFUSED),
    ("http://10.1.2.3/hook", REFUSED),
    ("http://169.254.169.254/latest/meta-data", REFUSED),
    ("http://metadata.google.internal/", REFUSED),
    ("https://no-such-host.invalid/hook", REFUSED),
])
def test_a_webhook_url_the_server_may_not_call_is_422_naming_the_field(
        client: FlaskClient, engine: Engine, url: Any, message: str) -> None:
    response = post_job(client, make_items(2), webhook_url=url)
    assert response.status_code == 422, response.get_json()
    assert error_of(response)["details"] == [{"field": "webhook_url", "message": message}]
    assert count(engine, Job) == count(engine, WebhookEvent) == count(engine, WebhookSecret) == 0


def test_the_operator_may_allow_private_receivers_but_never_cloud_metadata(private_app: Flask, engine: Engine) -> None:
    client = private_app.test_client()
    assert post_job(client, make_items(2), webhook_url="http://127.0.0.1:8080/hook").status_code == 202
    refused = post_job(client, make_items(2), webhook_url="http://169.254.169.254/latest")
    assert refused.status_code == 422 and error_of(refused)["details"][0]["field"] == "webhook_url"
    # /v1/personalization takes one too, under the same rules.
    bad = client.post("/v1/personalization", json={"responses": response_lines(), "webhook_url": "gopher://x/"},
                      headers=AUTH_A)
    assert bad.status_code == 422
    assert error_of(bad)["details"] == [{"field": "webhook_url", "message": "must be an http or https URL"}]
    good = client.post("/v1/personalization", json={"responses": response_lines(), "webhook_url": HOOK},
                       headers=AUTH_A)
    assert good.status_code == 202, good.get_json()
    assert webhooks.event_of_job(engine, good.get_json()["job_id"]) is not None


# ---------------------------------------------------------------- over HTTP

def test_deliveries_and_the_secret_are_their_owners_only(private_app: Flask, engine: Engine,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    client = private_app.test_client()
    with caplog.at_level(logging.DEBUG):
        created = post_job(client, make_items(3), webhook_url=HOOK)
        assert created.status_code == 202
        job_id = created.get_json()["job_id"]
        page = client.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_A).get_json()
        secret = client.get("/v1/webhook-secret", headers=AUTH_A).get_json()["secret"]
        other = client.get("/v1/webhook-secret", headers=AUTH_B).get_json()["secret"]
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A)
    assert page == {"event": {"id": webhooks.event_id(job_id), "url": HOOK, "status": "waiting", "type": None,
                              "attempts": 0, "next_attempt_at": None, "delivered_at": None},
                    "deliveries": [], "next_cursor": None}
    assert secret.startswith("whsec_") and other.startswith("whsec_") and secret != other
    assert Webhook(secret)  # a valid Standard Webhooks secret
    assert client.get("/v1/webhook-secret", headers=AUTH_A).get_json()["secret"] == secret  # made once
    # Another key's job is a 404 like a missing one; the secret is in no other response, no log, no row.
    assert client.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_B).status_code == 404
    assert client.get("/v1/jobs/not-a-job/deliveries", headers=AUTH_A).status_code == 404
    assert client.get("/v1/webhook-secret").status_code == 401
    assert secret not in job.get_data(as_text=True) and secret not in caplog.text
    with engine.connect() as conn:
        stored = conn.execute(select(col(WebhookSecret.ciphertext))).scalars().all()
    assert len(stored) == 2 and all(secret not in text and secret[6:] not in text for text in stored)
    plain = post_job(client, make_items(2)).get_json()["job_id"]
    assert client.get(f"/v1/jobs/{plain}/deliveries", headers=AUTH_A).get_json() == {
        "event": None, "deliveries": [], "next_cursor": None}


def test_an_idempotency_key_replayed_with_another_webhook_url_is_409(private_app: Flask) -> None:
    client = private_app.test_client()
    headers = {**AUTH_A, "Idempotency-Key": "hook-1"}
    first = post_job(client, make_items(2), headers, webhook_url=HOOK)
    assert post_job(client, make_items(2), headers, webhook_url=HOOK).status_code == 200
    again = post_job(client, make_items(2), headers, webhook_url=HOOK + "/other")
    assert (first.status_code, again.status_code) == (202, 409)


def test_the_delivery_log_is_cursor_paged(private_app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = ended_job(engine)
    arm(engine)
    monkeypatch.setattr(delivery, "post", lambda *_: webhooks.Outcome(False, 500, "the receiver answered HTTP 500"))
    event = webhooks.event_id(job_id)
    assert [delivery.deliver(engine, event, config((0,) * 5)) for _ in range(5)] == ["pending"] * 5
    client = private_app.test_client()
    seen: list[int] = []
    cursor = None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = client.get(f"/v1/jobs/{job_id}/deliveries{query}", headers=AUTH_A).get_json()
        seen += [row["attempt"] for row in page["deliveries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 2, 3, 4, 5]
    assert page["event"]["status"] == "pending" and page["event"]["attempts"] == 5
    bad = client.get(f"/v1/jobs/{job_id}/deliveries?limit=0", headers=AUTH_A)
    assert bad.status_code == 400 and error_of(bad)["details"][0]["field"] == "limit"


# ---------------------------------------------------------------- the event's life

def test_an_ended_job_arms_its_event_once_with_its_final_counts(engine: Engine) -> None:
    job_id = ended_job(engine, n=6)
    event = webhooks.event_id(job_id)
    assert arm(engine) == [event]
    assert arm(engine) == []  # armed once; queued once until an attempt ends or the task is lost
    stored = webhooks.event_of_job(engine, job_id)
    assert stored is not None and (stored.status, stored.type) == ("pending", "job.done")
    payload = json.loads(stored.payload or "")
    assert payload["type"] == "job.done" and payload["timestamp"].endswith("Z")
    assert payload["data"]["job_id"] == job_id and payload["data"]["status"] == "done"
    assert payload["data"]["counts"] == {"items": 6, "verdicts": 6, "calls": 12, "failed_calls": 0,
                                         "failed_items": 0, "awaiting_label": 0}
    # A running job's event waits.
    running = repo.create_job(engine, OWNER, [PairItem.model_validate(i) for i in make_items(2)],
                              load_profile("persona-certainty"), webhook_url=HOOK).job
    assert arm(engine) == []
    assert webhooks.event_of_job(engine, running.id).status == "waiting"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["cancelled", "budget_exhausted", "failed"])
def test_every_way_a_job_ends_has_its_event_type(engine: Engine, status: str) -> None:
    job = repo.create_job(engine, OWNER, [PairItem.model_validate(i) for i in make_items(2)],
                          load_profile("persona-certainty"), webhook_url=HOOK).job
    if status == "cancelled":
        assert repo.cancel_job(engine, job.id)
    else:
        with engine.begin() as conn:
            conn.execute(update(Job).where(col(Job.id) == job.id).values(status=status, finished_at=utcnow()))
    assert arm(engine) == [webhooks.event_id(job.id)]
    stored = webhooks.event_of_job(engine, job.id)
    assert stored is not None and stored.type == f"job.{status}"
    assert json.loads(stored.payload or "")["data"]["status"] == status


@pytest.mark.service  # a loopback receiver
def test_a_receiver_failing_3_times_then_answering_gets_one_success_recorded(engine: Engine) -> None:
    with Receiver([500, 503, 429]) as receiver:
        job_id = ended_job(engine, receiver.url)
        event = webhooks.event_id(job_id)
        arm(engine)
        outcomes = [delivery.deliver(engine, event, config()) for _ in range(5)]
        secret = webhooks.secret_of(engine, OWNER)
    assert outcomes == ["pending", "pending", "pending", "delivered", None]
    assert len(receiver.received) == 4
    for request in receiver.received:
        # The same id every time, each attempt signed afresh; the body is the stored payload.
        assert request.headers["webhook-id"] == event
        payload = Webhook(secret or "").verify(request.body, request.headers)
        assert payload["data"]["job_id"] == job_id and payload["type"] == "job.done"
    rows = webhooks.deliveries(engine, job_id)
    assert [(r.attempt, r.ok, r.status_code) for r in rows] == [(1, False, 500), (2, False, 503), (3, False, 429),
                                                                (4, True, 204)]
    assert all(len(r.response_snippet or "") <= webhooks.SNIPPET_CHARS for r in rows)
    assert rows[0].error == "the receiver answered HTTP 500" and rows[0].next_retry_at is not None
    assert rows[3].next_retry_at is None and rows[3].duration_ms is not None
    assert repo.get_job(engine, job_id).status == "done"  # type: ignore[union-attr]


def test_retries_run_out_and_the_job_stays_as_it_ended(engine: Engine) -> None:
    job_id = ended_job(engine, closed_port_url())
    event = webhooks.event_id(job_id)
    arm(engine)
    outcomes = [delivery.deliver(engine, event, config((0, 0))) for _ in range(4)]
    assert outcomes == ["pending", "pending", "failed", None]
    rows = webhooks.deliveries(engine, job_id)
    assert [(r.attempt, r.ok, r.error) for r in rows] == [(n, False, "connection refused") for n in (1, 2, 3)]
    assert rows[-1].next_retry_at is None
    stored = webhooks.event_of_job(engine, job_id)
    assert stored is not None and (stored.status, stored.attempts, stored.delivered_at) == ("failed", 3, None)
    assert arm(engine) == []
    job = repo.get_job(engine, job_id)
    assert job is not None and (job.status, job.n_verdicts) == ("done", 6)


def test_the_schedule_spaces_the_retries(engine: Engine) -> None:
    job_id = ended_job(engine, closed_port_url())
    event = webhooks.event_id(job_id)
    arm(engine)
    assert delivery.deliver(engine, event, config((60, 600))) == "pending"
    assert delivery.deliver(engine, event, config((60, 600))) is None  # not due for a minute
    assert arm(engine) == []
    stored = webhooks.event_of_job(engine, job_id)
    assert stored is not None and stored.next_attempt_at is not None
    later = stored.next_attempt_at + timedelta(seconds=1)
    sent: list[str] = []
    delivery.poll_once(engine, sent.append, config(), now=later)
    assert sent == [event]


def test_one_attempt_at_a_time_and_a_lost_attempt_is_logged_once(engine: Engine) -> None:
    job_id = ended_job(engine)
    event = webhooks.event_id(job_id)
    arm(engine)
    lease = timedelta(seconds=30)
    first = webhooks.claim(engine, event, lease)
    assert first is not None and first.attempt == 1
    assert webhooks.claim(engine, event, lease) is None  # a second copy of the task does nothing
    sent: list[str] = []
    delivery.poll_once(engine, sent.append, config())
    assert sent == []  # nor is another queued while the lease holds
    # The worker died: once its lease ran out, the next attempt logs the lost one first.
    later = utcnow() + lease + timedelta(seconds=1)
    second = webhooks.claim(engine, event, lease, now=later)
    assert second is not None and second.attempt == 2
    assert webhooks.record(engine, first, webhooks.Outcome(True, 204), (0,)) is None  # not its lease any more
    assert webhooks.record(engine, second, webhooks.Outcome(True, 204), (0,), now=later) == "delivered"
    rows = webhooks.deliveries(engine, job_id)
    assert [(r.attempt, r.ok, r.error) for r in rows] == [(1, False, webhooks.LOST), (2, True, None)]
    with engine.connect() as conn:
        assert conn.execute(select(col(WebhookDelivery.id)).where(col(WebhookDelivery.ok))).all() == [(rows[1].id,)]


def test_signed_headers_verify_with_standardwebhooks_and_a_changed_body_does_not() -> None:
    secret = webhooks.new_secret()
    body = b'{"type":"job.done","data":{"job_id":"j"}}'
    headers = delivery.signed_headers("msg_1", body, secret)
    assert Webhook(secret).verify(body, headers) == {"type": "job.done", "data": {"job_id": "j"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"j", b"k"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)


# ---------------------------------------------------------------- one POST (a loopback receiver)

@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver([302, 200], hold_s=1.5, hold_first=0) as server:
        yield server


@pytest.mark.service
def test_a_post_follows_no_redirect_reads_a_snippet_and_checks_the_address_each_time(receiver: Receiver) -> None:
    headers = {"content-type": "application/json"}
    redirect = delivery.post(receiver.url, b"{}", headers, 2.0, allow_private=True)
    assert (redirect.ok, redirect.status_code, redirect.error) == (False, 302, "the receiver answered a redirect "
                                                                              "(not followed)")
    answered = delivery.post(receiver.url, b"{}", headers, 2.0, allow_private=True)
    assert (answered.ok, answered.status_code) == (True, 200)
    assert answered.snippet is not None and len(answered.snippet) == webhooks.SNIPPET_CHARS
    assert receiver.received[1].headers["host"].startswith("127.0.0.1:")
    # The same URL once the operator no longer allows private addresses: refused before connecting.
    refused = delivery.post(receiver.url, b"{}", headers, 2.0, allow_private=False)
    assert (refused.ok, refused.error) == (False, delivery.REFUSED) and len(receiver.received) == 2


@pytest.mark.service
def test_a_receiver_slower_than_the_timeout_fails_the_attempt() -> None:
    with Receiver(hold_s=3.0, hold_first=1) as slow:
        outcome = delivery.post(slow.url, b"{}", {}, 0.5, allow_private=True)
    assert (outcome.ok, outcome.error) == (False, "no answer within 0.5 s")
    assert outcome.duration_ms is not None and outcome.duration_ms < 2000


@pytest.mark.slow  # two `pjudge` processes
def test_pjudge_keys_webhook_secret_prints_the_secret_the_api_gives_its_owner(tmp_path: Any) -> None:
    from tests.support.cli import run_pjudge

    url = f"sqlite:///{tmp_path}/keys.sqlite"
    env = {"DATABASE_URL": url}
    created = run_pjudge("keys", "create", "--format", "json", env=env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    printed = run_pjudge("keys", "webhook-secret", key["prefix"], env=env)
    assert printed.returncode == 0, printed.stderr
    secret = printed.stdout.strip()
    assert secret.startswith("whsec_") and secret not in printed.stderr
    from store.db import get_engine

    engine = get_engine(url)
    client = new_app(engine, lambda job: None, PJUDGE_API_KEYS="").test_client()
    answer = client.get("/v1/webhook-secret", headers={"Authorization": f"Bearer {key['key']}"})
    assert answer.get_json() == {"secret": secret}
    assert run_pjudge("keys", "webhook-secret", "pj_nothing", env=env).returncode != 0


@pytest.mark.service
def test_an_https_receiver_must_present_a_certificate_the_server_trusts(tmp_path: Any) -> None:
    import datetime as dt
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    receiver = Receiver()
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    with receiver:
        url = receiver.url.replace("http://", "https://")
        outcome = delivery.post(url, b"{}", {}, 2.0, allow_private=True)
    assert not outcome.ok and outcome.error is not None and outcome.error.startswith("TLS: ")
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error and receiver.received == []


def test_a_host_that_resolves_to_an_internal_address_at_send_time_is_refused(engine: Engine,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    answers = {"hooks.example.com": "93.184.216.34"}  # public when the job is posted

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    client = new_app(engine, lambda job: None).test_client()
    created = post_job(client, make_items(2), webhook_url="http://hooks.example.com/hook")
    assert created.status_code == 202, created.get_json()
    job_id = created.get_json()["job_id"]
    judge_all(engine, job_id)
    arm(engine)
    answers["hooks.example.com"] = "169.254.169.254"  # DNS rebinding: internal when the event is sent
    strict = Settings(webhook_retry_schedule=(0,), webhook_allow_private=False)
    assert delivery.deliver(engine, webhooks.event_id(job_id), strict) == "pending"
    (row,) = webhooks.deliveries(engine, job_id)
    assert (row.ok, row.status_code, row.error) == (False, None, delivery.REFUSED)
