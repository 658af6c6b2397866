"""The Flask application factory.

    create_app(engine=None, enqueue=None, config=None)

`engine`: a migrated SQLAlchemy engine (default: store.db.get_engine(), i.e. DATABASE_URL or the
embedded SQLite). `enqueue(job)`: sends a stored job to the workers (default:
worker.tasks.enqueue_job, imported on first use so that building the app starts no broker).
`config`: PJUDGE_* settings (see api.context.ApiSettings) and Flask settings; unset ones come
from the environment.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request
from flask.sessions import SecureCookieSessionInterface
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from werkzeug.exceptions import RequestEntityTooLarge

from api.context import ApiSettings, ApiState, Enqueue
from api.errors import ApiError, problem, register_error_handlers
from judge import tracing
from store.models import Job


def _default_enqueue(job: Job) -> int:
    from worker.tasks import enqueue_job

    return enqueue_job(job)


def _trace_job(response: Response, started_ns: int) -> None:
    """The POST's `pjudge.job` span, when tracing is on (judge.tracing)."""
    if tracing.tracer() is None:
        return
    body = response.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("job_id"), str):
        tracing.job_posted(body["job_id"], started_ns, {"http.route": "/v1/jobs", "pjudge.status": str(body.get("status"))})


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def configure_sessions(app: Flask, secret: SecretStr | None) -> None:
    """/dashboard's session cookie: signed with PJUDGE_SESSION_SECRET (else a random secret of this
    process), HttpOnly, SameSite=Strict, sent to /dashboard only. The API itself uses no session."""
    app.secret_key = secret.get_secret_value() if secret is not None else secrets.token_hex(32)
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME="pjudge_dashboard", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/dashboard")


def create_app(engine: Engine | None = None, enqueue: Enqueue | None = None,
               config: Mapping[str, Any] | None = None) -> Flask:
    settings = ApiSettings.load(config)
    if engine is None:
        from store.db import get_engine

        engine = get_engine()
    app = Flask("pjudge")
    configure_sessions(app, settings.config.session_secret)
    app.config.update({k: v for k, v in (config or {}).items() if k.isupper() and not k.startswith("PJUDGE_")})
    # werkzeug refuses a larger Content-Length (413) before reading the body.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["pjudge"] = ApiState(engine=engine, enqueue=enqueue or _default_enqueue, settings=settings)

    from api import credentials, dashboard, health, jobs, openapi, pages, personalization, stats, webhooks
    from api.pages import upload_limit

    for blueprint in (jobs.bp, pages.bp, personalization.bp, stats.bp, credentials.bp, health.bp, openapi.bp,
                      dashboard.bp, webhooks.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.started_ns = time.time_ns()
        # Checked before authentication too: an oversized upload is refused without touching the database.
        length = request.content_length
        limit = upload_limit(settings) or settings.max_body_bytes
        if length is not None and length > limit:
            raise RequestEntityTooLarge()
        refuse_content_encoding()

    @app.after_request
    def _finish(response: Response) -> Response:
        route = route_label(request.url_rule.rule) if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        app.extensions["pjudge"].metrics.observe(request.method, route, response.status_code, elapsed)
        if route == "/v1/jobs" and request.method == "POST" and response.status_code in (200, 202):
            _trace_job(response, g.get("started_ns", time.time_ns()))
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app


def refuse_content_encoding() -> None:
    """415 naming Content-Encoding for a body sent compressed (gzip, br...): nothing here decodes
    one, and read as it is, it would be reported as invalid UTF-8 or a malformed line instead."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if encoding not in ("", "identity") and has_body:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Encoding {encoding[:40]!r} is not supported: send the body uncompressed",
                       [problem("Content-Encoding", "only identity (no Content-Encoding header)")])


_CONVERTER = re.compile(r"<[^:<>]+:([^<>]+)>")


def route_label(rule: str) -> str:
    """A URL rule as the metrics name it: its template without converters (/v1/jobs/<job_id>)."""
    return _CONVERTER.sub(r"<\1>", rule)
