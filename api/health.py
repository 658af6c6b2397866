"""/healthz (no auth: load balancers probe it) and /metrics (Prometheus text; no auth unless
PJUDGE_METRICS_AUTH is set, since scrapers usually sit inside the private network)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.auth import authenticate
from api.context import state
from api.errors import json_response
from api.metrics import CONTENT_TYPE, render
from store import repo
from store.queries import ping, totals

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
    engine = state().engine
    text = render(state().metrics, repo.job_counts(engine), totals(engine))
    return Response(text, mimetype="text/plain", content_type=CONTENT_TYPE)
