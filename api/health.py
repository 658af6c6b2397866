"""/healthz (no auth: load balancers probe it) and /metrics (Prometheus text; no auth unless
PJUDGE_METRICS_AUTH is set, since scrapers usually sit inside the private network)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response

from api.auth import authenticate
from api.context import state
from api.errors import json_response
from api.metrics import CONTENT_TYPE, DatabaseCollector, redis_queue_lengths, render
from store.queries import ping

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    ok = ping(state().engine)
    document = {"status": "ok" if ok else "error", "database": "ok" if ok else "error"}
    return json_response(document, 200 if ok else 503)


@bp.get("/metrics")
def metrics() -> Response:
    if state().settings.metrics_require_auth:
        authenticate()
    api = state()
    if api.database_metrics is None:
        api.database_metrics = DatabaseCollector(api.engine, _queue_lengths())
    return Response(render(api.metrics, api.database_metrics), content_type=CONTENT_TYPE)


def _queue_lengths() -> Callable[[], dict[str, int]] | None:
    """The broker's queue lengths when REDIS_URL is set (a scrape never starts the embedded Redis)."""
    from worker.broker import configured_broker_url

    url = configured_broker_url()
    if not url:
        return None
    from worker.app import QUEUE

    if url.startswith("redis+socket://"):  # kombu's spelling of a socket; redis-py's is unix://
        url = "unix://" + url[len("redis+socket://"):]
    return redis_queue_lengths(url, QUEUE)
