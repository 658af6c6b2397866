"""Webhook delivery: one signed POST per ended job with a `webhook_url`, retried with backoff.

A poller beside each worker process (`start_webhooks`, every PJUDGE_WEBHOOK_POLL_S) arms the
events of jobs that ended and queues a `pjudge.deliver_webhook` task for each event that is due
(store.webhooks: one poller queues it, a lost task is queued again). The task (acks_late, like
every task here) leases the event, POSTs it and records the attempt; a redelivered copy finds it
leased or no longer due and does nothing, so an event is attempted by one worker at a time and a
success is recorded once. A worker killed mid-attempt leaves its lease to run out; the next
attempt sends the same `webhook-id`, which the receiver deduplicates by (Standard Webhooks).

Each attempt is signed afresh (standardwebhooks: `webhook-id`, `webhook-timestamp`,
`webhook-signature` over id.timestamp.body with the key's `whsec_` secret) over the same body.
The URL is a client-chosen endpoint (judge.endpoints): resolved at each attempt, every address
checked, the connection pinned to a checked address (a rebinding DNS answer cannot move it), no
redirects followed, a deadline over the whole attempt, and no more of the answer read than a short
snippet. Failures never touch the job: its status is the judging's, whatever the receiver does.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from sqlalchemy.engine import Engine

from judge.endpoints import EndpointError, client_addresses, parse_endpoint
from judge.settings import Settings, settings
from store import queue as human_queue
from store import webhooks
from store.db import get_engine
from store.vault import VaultError
from worker.app import QUEUE, app
from worker.errors import safe_traceback

log = logging.getLogger("pjudge.webhooks")
TASK = "pjudge.deliver_webhook"
LEASE_MARGIN_S = 5.0  # beyond the attempt's deadline: recording it
SNIPPET_BYTES = 1024
USER_AGENT = "persona-judge-webhooks/1"
REFUSED = "refused: the host does not resolve to addresses this server posts webhooks to"


# ---------------------------------------------------------------- one attempt

class _Pinned(http.client.HTTPConnection):
    """HTTP to one checked address, the Host header still the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTls(http.client.HTTPSConnection):
    """HTTPS to one checked address, the certificate checked against the URL's host (SNI too)."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def _snippet(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() or c in "\n\t" else " " for c in text)[:webhooks.SNIPPET_CHARS]


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool) -> webhooks.Outcome:
    """POST `body` to `url` once, under the rules of a client-chosen endpoint (module docstring)."""
    started = time.perf_counter()

    def outcome(ok: bool, status: int | None = None, error: str | None = None, snippet: str | None = None
                ) -> webhooks.Outcome:
        return webhooks.Outcome(ok, status, error, round((time.perf_counter() - started) * 1000, 1), snippet)

    try:
        endpoint = parse_endpoint(url)  # checked at POST already
    except EndpointError as exc:
        return outcome(False, error=f"url {exc}")
    try:
        addresses = client_addresses(endpoint, allow_private)
    except EndpointError:  # one text whatever the reason, as at POST (api.profiles.webhook_url_of)
        return outcome(False, error=REFUSED)
    # Non-ASCII in the path percent-encoded as a browser would (http.client sends ASCII only); escapes kept.
    target = quote(urlsplit(url).path or "/", safe="/%:@!$&'()*+,;=-._~")
    host = endpoint.host.encode("idna").decode("ascii")  # the Host header and the certificate's name
    kind = _PinnedTls if endpoint.scheme == "https" else _Pinned
    error = "no address"
    for address in addresses:
        connection = kind(host, endpoint.port, str(address), timeout)
        # A deadline over the whole attempt: a receiver that drips its answer is cut off there.
        expired = threading.Event()
        deadline = threading.Timer(timeout, _shut, args=(connection, expired))
        deadline.start()
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            snippet = _snippet(response.read(SNIPPET_BYTES))
            status = response.status
        except ConnectionRefusedError:
            error = "connection refused"
            continue  # the next address, if any
        except TimeoutError:
            return outcome(False, error=f"no answer within {timeout:g} s")
        except ssl.SSLError as exc:
            return outcome(False, error=f"TLS: {exc.reason or type(exc).__name__}")
        except (OSError, http.client.HTTPException) as exc:
            return outcome(False, error=f"no answer within {timeout:g} s" if expired.is_set()
                           else f"connection failed ({type(exc).__name__})")
        finally:
            deadline.cancel()
            connection.close()
        if 200 <= status < 300:
            return outcome(True, status, snippet=snippet)
        what = "a redirect (not followed)" if 300 <= status < 400 else f"HTTP {status}"
        return outcome(False, status, f"the receiver answered {what}", snippet)
    return outcome(False, error=error)


def _shut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; close() from here would not
        except OSError:
            pass  # already closed


def signed_headers(event_id: str, body: bytes, secret: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (its own timestamp, the event's id)."""
    from standardwebhooks import Webhook

    now = now or datetime.now(UTC)
    return {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(event_id, now, body)}


def deliver(engine: Engine, event_id: str, config: Settings | None = None) -> str | None:
    """One attempt at a due event, if this task may make it (store.webhooks.claim); the event's new
    status, or None when another attempt has it, it is not due, or it is over."""
    config = config or settings()
    lease = timedelta(seconds=config.webhook_timeout_s + LEASE_MARGIN_S)
    claimed = webhooks.claim(engine, event_id, lease)
    if claimed is None:
        return None
    outcome = _attempt(engine, claimed, config)
    status = webhooks.record(engine, claimed, outcome, config.webhook_retry_schedule)
    if status is None:
        log.warning("webhook %s of job %s: attempt %d outlived its lease; not recorded", claimed.event_id,
                    claimed.job_id, claimed.attempt)
    elif not outcome.ok:
        log.info("webhook %s of job %s: attempt %d failed (%s); event %s", claimed.event_id, claimed.job_id,
                 claimed.attempt, outcome.error, status)
    return status


def _attempt(engine: Engine, claimed: webhooks.Claim, config: Settings) -> webhooks.Outcome:
    """Sign and post a claimed event; any failure is the attempt's outcome (recorded, retried on
    the schedule), never an exception that would leave the lease to run out."""
    try:
        secret = webhooks.secret_of(engine, claimed.owner)
        assert secret is not None  # made when missing
        body = claimed.payload.encode("utf-8")
        return post(claimed.url, body, signed_headers(claimed.event_id, body, secret), config.webhook_timeout_s,
                    config.webhook_allow_private)
    except VaultError:
        log.error("webhook %s of job %s: this worker cannot decrypt the key's signing secret (PJUDGE_SECRET_KEY "
                  "must be the API's)", claimed.event_id, claimed.job_id)
        return webhooks.Outcome(False, error="internal: the server cannot read this key's signing secret")
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, with the traceback in the log
        log.error("webhook %s of job %s: attempt %d failed inside the worker\n%s", claimed.event_id,
                  claimed.job_id, claimed.attempt, safe_traceback(exc))
        return webhooks.Outcome(False, error=f"internal: {type(exc).__name__}")


@app.task(name=TASK, acks_late=True)
def deliver_webhook(event_id: str) -> str | None:
    return deliver(get_engine(), event_id)


# ---------------------------------------------------------------- the poller

def poll_once(engine: Engine, send: Callable[[str], object], config: Settings | None = None,
              now: datetime | None = None) -> int:
    """Arm the events of jobs that ended; queue (`send`) a delivery of each due event this poller
    is the one to queue. Returns how many were queued."""
    config = config or settings()
    now = now or datetime.now(UTC)
    for job in webhooks.ended_waiting(engine):
        waiting = human_queue.count_waiting(engine, job.id, human_queue.cascade_then(job.profile_json))
        webhooks.arm(engine, job, webhooks.payload_of(job, now, waiting), now)
    # A queued task not started by then (lost with a broker, or behind a long queue) is queued again.
    until = now + timedelta(seconds=max(60.0, 3 * (config.webhook_timeout_s + LEASE_MARGIN_S)))
    sent = 0
    for event_id in webhooks.due_events(engine, now):
        if webhooks.mark_dispatched(engine, event_id, until, now):
            send(event_id)
            sent += 1
    return sent


def _send(event_id: str) -> None:
    deliver_webhook.apply_async(args=(event_id,), queue=QUEUE, retry=True,
                                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})


def start_webhooks(interval_s: float | None = None) -> threading.Event:
    """Poll every `interval_s` (PJUDGE_WEBHOOK_POLL_S) in a daemon thread; set the event to stop."""
    interval = interval_s or settings().webhook_poll_s
    stop = threading.Event()

    def loop() -> None:
        engine = get_engine()
        while not stop.wait(interval):
            try:
                poll_once(engine, _send)
            except Exception as exc:  # noqa: BLE001 - the database or broker may be away for a while
                log.info("webhook poll skipped: %s", type(exc).__name__)

    threading.Thread(target=loop, name="pjudge-webhooks", daemon=True).start()
    return stop
