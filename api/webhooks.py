"""Webhooks over HTTP: a job's delivery log (GET /v1/jobs/{job_id}/deliveries) and the caller's
signing secret (GET /v1/webhook-secret, the one response that ever holds it). A job's
`webhook_url` is checked by api.profiles.webhook_url_of; delivery is the workers'
(worker/webhooks.py)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.auth import authenticate, current_owner
from api.context import state
from api.errors import json_response
from api.jobs import _aware, owned_job
from api.parsing import parse_query
from api.schemas import DeliveriesQuery, DeliveryOut, DeliveryPage, WebhookEventOut, WebhookSecretOut
from store import webhooks

bp = Blueprint("webhooks", __name__, url_prefix="/v1")


@bp.before_request
def _authenticate() -> None:
    authenticate()


@bp.get("/jobs/<job_id>/deliveries")
def deliveries(job_id: str) -> Response:
    """The job's webhook event and its delivery attempts, oldest first, a page at a time."""
    job = owned_job(job_id)
    query = parse_query(DeliveriesQuery)
    engine = state().engine
    event = webhooks.event_of_job(engine, job.id)
    after = int(query.cursor) if query.cursor is not None else 0
    rows = webhooks.deliveries(engine, job.id, after, query.limit + 1) if event is not None else []
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    page = DeliveryPage(
        event=None if event is None else WebhookEventOut.model_validate(
            {"id": event.id, "url": event.url, "status": event.status, "type": event.type,
             "attempts": event.attempts, "next_attempt_at": _aware(event.next_attempt_at),
             "delivered_at": _aware(event.delivered_at)}),
        deliveries=[DeliveryOut(attempt=r.attempt, ok=r.ok, status_code=r.status_code, error=r.error,
                                duration_ms=r.duration_ms, response_snippet=r.response_snippet,
                                next_retry_at=_aware(r.next_retry_at), created_at=_aware(r.created_at))
                    for r in rows],
        next_cursor=str(rows[-1].id) if more and rows else None)
    return json_response(page.model_dump(mode="json"))


@bp.get("/webhook-secret")
def webhook_secret() -> Response:
    """The caller's signing secret (made on first use); never logged, never in another response."""
    secret = webhooks.secret_of(state().engine, current_owner())
    assert secret is not None  # created when missing
    return json_response(WebhookSecretOut(secret=secret).model_dump(mode="json"))
