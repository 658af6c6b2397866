"""Webhook events of jobs, their delivery attempts, and the signing secret of each API key.

The exactly-once model of store.repo.record_verdicts, applied to webhooks:

- A job created with a `webhook_url` gets its one event row in the job's own transaction
  (`add_event`, status `waiting`); its id, the `webhook-id` header of every attempt, never changes.
- Once the job has ended (done, failed, cancelled, budget_exhausted), `arm_ended` gives the event
  its type and payload and makes it `pending`: one conditional UPDATE, so however many workers
  look, the event is armed once, with the job's final counts. Nothing here ever writes the job.
- `mark_dispatched` lets one of the workers' pollers queue a delivery task for a due event (a
  lost task is queued again once `dispatched_until` passes); `claim` lets one task at a time
  attempt it (a lease, which a killed worker's attempt lets run out); `record` writes the
  attempt's log row and the event's next state in one transaction, only while the lease is its
  own. A second copy of a task finds the event leased, delivered or not yet due, and does nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from store import vault
from store.db import Bind, reading, writing
from store.models import MAX_POSITION, Job, WebhookDelivery, WebhookEvent, WebhookSecret, utcnow

# store.repo.TERMINAL (not imported: repo imports this module)
ENDED = ("done", "failed", "cancelled", "budget_exhausted")
WAITING, PENDING, DELIVERED, FAILED = "waiting", "pending", "delivered", "failed"
EVENT_TYPES = tuple(f"job.{status}" for status in ENDED)
SECRET_PREFIX = "whsec_"
_EVENT_NAMESPACE = uuid.UUID("4f0f5f4e-7f43-4c36-9d43-5e3b1b8f7a10")
SNIPPET_CHARS = 256
ERROR_CHARS = 500


# ---------------------------------------------------------------- secrets

def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_of(bind: Bind, owner: str, create: bool = True) -> str | None:
    """The owner's signing secret, made on first use (`create`); None when it has none and
    `create` is false. Two first uses at once agree: the second insert loses and reads the first."""
    with reading(bind) as conn:
        stored = conn.execute(select(col(WebhookSecret.ciphertext))
                              .where(col(WebhookSecret.owner) == owner)).scalar_one_or_none()
    if stored is not None:
        return vault.decrypt(stored)
    if not create:
        return None
    secret = new_secret()
    try:
        with writing(bind) as conn:
            conn.execute(insert(WebhookSecret).values(owner=owner, ciphertext=vault.encrypt(secret),
                                                      created_at=utcnow()))
    except IntegrityError:
        return secret_of(bind, owner, create=False)
    return secret


# ---------------------------------------------------------------- events

def event_id(job_id: str) -> str:
    """The event's id, fixed by its job: the `webhook-id` a receiver deduplicates by."""
    return "msg_" + uuid.uuid5(_EVENT_NAMESPACE, f"job-ended:{job_id}").hex


def add_event(conn: Connection, job_id: str, owner: str, url: str, now: datetime | None = None) -> None:
    """The job's event, waiting for its end (in the transaction that stores the job)."""
    conn.execute(insert(WebhookEvent).values(id=event_id(job_id), job_id=job_id, owner=owner, url=url,
                                             status=WAITING, attempts=0, created_at=now or utcnow()))


def payload_of(job: Job, now: datetime, awaiting_label: int = 0) -> dict[str, Any]:
    """The event's body: its type, when the job ended, and the job's id, status, counts and cost
    (the `counts` of GET /v1/jobs/{job_id})."""
    ended = job.finished_at or now
    ended = ended.replace(tzinfo=now.tzinfo) if ended.tzinfo is None else ended
    return {"type": f"job.{job.status}", "timestamp": ended.isoformat().replace("+00:00", "Z"),
            "data": {"job_id": job.id, "status": job.status,
                     "counts": {"items": job.n_items, "verdicts": job.n_verdicts, "calls": job.n_calls,
                                "failed_calls": job.n_failed_calls, "failed_items": job.n_failed_items,
                                "awaiting_label": awaiting_label},
                     "cost_usd": round(job.cost_usd or 0.0, 6), "max_cost_usd": job.max_cost_usd}}


def ended_waiting(bind: Bind, limit: int = 100) -> list[Job]:
    """Jobs that ended while their event still waits (the waiting events are the jobs with a
    webhook not yet ended: a short scan of the status index)."""
    with reading(bind) as conn:
        rows = conn.execute(
            select(Job).join(WebhookEvent, col(WebhookEvent.job_id) == col(Job.id))
            .where(col(WebhookEvent.status) == WAITING, col(Job.status).in_(ENDED)).limit(limit)
        ).mappings().all()
    return [Job.model_validate(dict(row)) for row in rows]


def arm(bind: Bind, job: Job, payload: dict[str, Any], now: datetime | None = None) -> bool:
    """Give the waiting event of an ended job its type and payload, due now; False when another
    worker armed it first."""
    now = now or utcnow()
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    with writing(bind) as conn:
        result = conn.execute(
            update(WebhookEvent).where(col(WebhookEvent.job_id) == job.id, col(WebhookEvent.status) == WAITING)
            .values(status=PENDING, type=payload["type"], payload=body, next_attempt_at=now, ended_at=now))
    return bool(result.rowcount)


def _due(now: datetime) -> Any:
    return and_(col(WebhookEvent.status) == PENDING, col(WebhookEvent.next_attempt_at) <= now,
                or_(col(WebhookEvent.lease_until).is_(None), col(WebhookEvent.lease_until) < now))


def due_events(bind: Bind, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Ids of pending events whose attempt is due, not leased and with no delivery task queued."""
    now = now or utcnow()
    with reading(bind) as conn:
        rows = conn.execute(
            select(col(WebhookEvent.id)).where(
                _due(now), or_(col(WebhookEvent.dispatched_until).is_(None), col(WebhookEvent.dispatched_until) < now))
            .order_by(col(WebhookEvent.next_attempt_at)).limit(limit)).scalars().all()
    return list(rows)


def mark_dispatched(bind: Bind, event: str, until: datetime, now: datetime | None = None) -> bool:
    """Whether this poller is the one to queue a delivery task for `event` (none is queued for it
    until `until`, unless an attempt ends first)."""
    now = now or utcnow()
    with writing(bind) as conn:
        result = conn.execute(
            update(WebhookEvent).where(
                col(WebhookEvent.id) == event, _due(now),
                or_(col(WebhookEvent.dispatched_until).is_(None), col(WebhookEvent.dispatched_until) < now))
            .values(dispatched_until=until))
    return bool(result.rowcount)


@dataclass(frozen=True)
class Claim:
    """An attempt a task may make: the event, its attempt number and the lease that is its own."""

    event_id: str
    job_id: str
    owner: str
    url: str
    payload: str
    attempt: int
    token: str


LOST = "the worker stopped during this attempt; its outcome is unknown (the next attempt sends the same webhook-id)"


def claim(bind: Bind, event: str, lease: timedelta, now: datetime | None = None) -> Claim | None:
    """Lease a due event for one attempt; None when it is not due, leased, delivered or failed.

    An attempt whose worker died left its lease to run out and no log row: it is logged here as
    lost before the next attempt starts (same transaction, so it is logged once)."""
    now = now or utcnow()
    token = secrets.token_hex(16)
    with writing(bind) as conn:
        row = conn.execute(select(WebhookEvent).where(col(WebhookEvent.id) == event, _due(now))).mappings().first()
        if row is None:
            return None
        result = conn.execute(
            update(WebhookEvent).where(col(WebhookEvent.id) == event, col(WebhookEvent.attempts) == row["attempts"],
                                       _due(now))
            .values(attempts=row["attempts"] + 1, lease_token=token, lease_until=now + lease,
                    # due again when the lease runs out, should this attempt never end
                    next_attempt_at=now + lease, dispatched_until=None))
        if not result.rowcount:
            return None
        if row["lease_token"] is not None:  # the previous attempt never recorded its end
            conn.execute(insert(WebhookDelivery).values(
                event_id=event, job_id=row["job_id"], attempt=row["attempts"], ok=False, error=LOST,
                next_retry_at=now, created_at=now))
    return Claim(event, row["job_id"], row["owner"], row["url"], row["payload"], row["attempts"] + 1, token)


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: ok when the receiver answered 2xx."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    snippet: str | None = None


def record(bind: Bind, claimed: Claim, outcome: Outcome, schedule: Sequence[float],
           now: datetime | None = None) -> str | None:
    """The attempt's log row and the event's next state (delivered; pending, due after the
    schedule's delay for this attempt; failed once the schedule is used up), in one transaction,
    only while the lease is still this attempt's. Returns the event's new status (None: the lease
    was lost, nothing written)."""
    now = now or utcnow()
    retry_at: datetime | None = None
    if outcome.ok:
        status = DELIVERED
    elif claimed.attempt <= len(schedule):
        status, retry_at = PENDING, now + timedelta(seconds=schedule[claimed.attempt - 1])
    else:
        status = FAILED
    with writing(bind) as conn:
        result = conn.execute(
            update(WebhookEvent).where(col(WebhookEvent.id) == claimed.event_id,
                                       col(WebhookEvent.lease_token) == claimed.token)
            .values(status=status, lease_token=None, lease_until=None, dispatched_until=None,
                    next_attempt_at=retry_at, delivered_at=now if outcome.ok else None))
        if not result.rowcount:
            return None
        conn.execute(insert(WebhookDelivery).values(
            event_id=claimed.event_id, job_id=claimed.job_id, attempt=claimed.attempt, ok=outcome.ok,
            status_code=outcome.status_code, error=(outcome.error or None) and outcome.error[:ERROR_CHARS],
            duration_ms=outcome.duration_ms,
            response_snippet=(outcome.snippet or None) and outcome.snippet[:SNIPPET_CHARS],
            next_retry_at=retry_at, created_at=now))
    return status


# ---------------------------------------------------------------- reading

def event_of_job(bind: Bind, job_id: str) -> WebhookEvent | None:
    with reading(bind) as conn:
        row = conn.execute(select(WebhookEvent).where(col(WebhookEvent.job_id) == job_id)).mappings().first()
    return WebhookEvent.model_validate(dict(row)) if row else None


def deliveries(bind: Bind, job_id: str, after: int = 0, limit: int = 100) -> list[WebhookDelivery]:
    """The job's delivery attempts in the order they were made, after the row id `after`."""
    after = min(after, MAX_POSITION)  # an INTEGER id: PostgreSQL refuses a larger value even to compare
    with reading(bind) as conn:
        rows = conn.execute(
            select(WebhookDelivery).where(col(WebhookDelivery.job_id) == job_id, col(WebhookDelivery.id) > after)
            .order_by(col(WebhookDelivery.id)).limit(limit)).mappings().all()
    return [WebhookDelivery.model_validate(dict(row)) for row in rows]
