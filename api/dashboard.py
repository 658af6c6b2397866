"""/dashboard: the service's statistics in a browser, server-rendered with Jinja2, charts by plotly
(its JavaScript served from the plotly wheel, no CDN).

Authentication is the API's (api.auth): a login form takes an API key once, and the session cookie
(signed, HttpOnly, SameSite=Strict, Secure over https; api.app.configure_sessions) keeps only the
key's hash, the owner id every query is filtered by, checked against the active keys on every
request (a revoked key's session ends at once). The key never appears in a URL. Every POST carries
the session's CSRF token. Pages without a session redirect to the login form; the JSON the pages
read answers 401.

The numbers are the API's own: the overview calls api.stats.agreement_report (the code of
/v1/stats/agreement) once, with per_day (store.stats.per_day: the days and judges from one query
grouped by day and judge), and shows the query that gives them; each point also names the
/v1/stats/agreement query over its own day (and judge) that returns it. The coverage and
reliability curves are the totals' coverage_curve and reliability. /dashboard/groups is
/v1/stats/agreement with group_by (any metadata key, or profile, model, job). A job's page shows
the document of /v1/jobs/{id}/report and the page of /v1/jobs/{id}/queue, and labels go through
store.repo's attach_labels like POST /v1/jobs/{id}/labels.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, redirect, render_template, request, session, url_for
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import col
from werkzeug.wrappers import Response as BaseResponse

from api.auth import owner_is_active, owner_of_key
from api.context import state
from api.errors import ApiError, invalid, json_response, problem, pydantic_problems, summarize
from api.parsing import check_query_text
from api.schemas import LabelIn, StatsQuery
from api.stats import agreement_report
from judge.jsonl import bad_text
from store import repo, stats
from store.models import Job

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static", static_url_path="/static")

MAX_JOBS = 100  # jobs listed on the overview, newest first
OPEN = {"dashboard.login", "dashboard.plotly_js", "dashboard.static"}  # pages without a session


def plotly_version() -> str:
    import plotly

    return str(plotly.__version__)


# ---------------------------------------------------------------- session, CSRF

def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "plotly_version": plotly_version}


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "no dashboard session: sign in at /dashboard/login")


@bp.before_request
def _session() -> BaseResponse | None:
    if request.endpoint in OPEN:
        if request.method != "GET":
            _check_csrf()
        return None
    owner = session.get("owner")
    if not isinstance(owner, str) or not owner_is_active(owner):
        session.pop("owner", None)
        if request.endpoint is not None and request.endpoint.startswith("dashboard.data_"):
            raise _unauthorized()
        if request.method == "POST":
            raise _unauthorized()
        return redirect(url_for("dashboard.login"))
    g.owner = owner  # api.auth.current_owner: what the API's own code filters by
    if request.method == "POST":
        _check_csrf()
    return None


def _check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise ApiError(403, "forbidden", "missing or stale form token: reload the page and try again")


# Scripts only from this server (plotly.js and dashboard.js: no inline script); plotly sets inline
# styles and draws some markers as data: images; no framing (clickjacking of the label forms).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@bp.after_request
def _headers(response: BaseResponse) -> BaseResponse:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int]:
    error = None
    if request.method == "POST":
        key = request.form.get("key", "").strip()
        throttle = state().throttle
        address = request.remote_addr or ""
        wait = throttle.retry_after(address)
        digest = repo.hash_key(key)
        # As for the API (api.auth): over the address's limit, only keys known to be good get in.
        known = digest in state().settings.env_key_hashes or throttle.known(digest)
        if wait is not None and not known:
            error = f"too many failed sign-ins from this address; retry in {wait} s"
        else:
            try:
                owner = owner_of_key(key)
            except ApiError:
                throttle.failed(address)
                error = "invalid or revoked key"
            else:
                throttle.succeeded(owner)
                session.clear()  # a new session (and CSRF token) for the signed-in key
                session["owner"] = owner
                csrf_token()
                return redirect(url_for("dashboard.overview"))
    return render_template("dashboard/login.html", error=error), (401 if error else 200)


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.get("/plotly-<version>.min.js")
def plotly_js(version: str) -> Response:
    """plotly.js from the installed wheel; the URL names its version, so browsers keep it a year."""
    from plotly.offline import get_plotlyjs

    response = Response(get_plotlyjs(), mimetype="text/javascript")
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    response.headers["ETag"] = f'"plotly-{plotly_version()}"'
    return response


# ---------------------------------------------------------------- the overview

FILTERS = ("profile", "model", "since", "until")


def _filters(*extra: str) -> StatsQuery:
    """The page's filters (profile, model, since, until and the `extra` names), validated like
    /v1/stats/agreement's query; empty form fields count as absent."""
    args = {key: value for key, value in request.args.items() if value != "" and key in (*FILTERS, *extra)}
    check_query_text(args)  # as the API's parse_query: a NUL would reach PostgreSQL
    try:
        return StatsQuery.model_validate(args)
    except ValidationError as exc:
        problems = pydantic_problems(exc)
        raise ApiError(400, "bad_request", summarize(problems, "invalid filter"), problems) from None


def _query_string(query: StatsQuery, per_day: bool = False) -> str:
    """`query` as /v1/stats/agreement's query string (its filters, group_by and per_day)."""
    fields = {name: getattr(query, name) for name in (*FILTERS, "group_by")}
    text = urlencode({name: value.isoformat() if isinstance(value, datetime) else value
                      for name, value in fields.items() if value is not None})
    return f"{text}&per_day=true" if per_day and text else "per_day=true" if per_day else text


def _point(query: StatsQuery, report: dict[str, Any], day: str) -> dict[str, Any]:
    """One day's numbers as the charts draw them, with the /v1/stats/agreement query giving them."""
    kappa = report.get("cohen_kappa") or {}
    alpha = report.get("krippendorff_alpha") or {}
    return {"day": day, "query": _query_string(query),
            "labelled": report["counts"]["labelled"], "accuracy": report.get("accuracy"),
            "accuracy_no_tie": report.get("accuracy_no_tie"),
            "cohen_kappa": kappa.get("value"), "cohen_kappa_ci95": kappa.get("ci95"),
            "krippendorff_alpha": alpha.get("value"), "krippendorff_alpha_ci95": alpha.get("ci95"),
            "first_position_rate": report.get("first_position_rate"),
            "position_consistency": report.get("position_consistency"),
            "prefers_longer": report.get("prefers_longer"), "ece": report.get("ece"),
            "cost_usd": report["cost"]["cost_usd"], "calls": report["cost"]["calls"],
            "items": report["cost"]["items"]}


def overview_data(owner: str, query: StatsQuery) -> dict[str, Any]:
    """What the overview draws: the totals (/v1/stats/agreement for the filters), and from its
    per_day (the same query with per_day=true: one SQL query grouped by day and judge) a series per
    profile and model with one point per day, and the numbers of each day."""
    totals = agreement_report(owner, query.model_copy(update={"per_day": True}))
    days = totals.pop("per_day")
    judges = [(j["profile"], j["model"]) for j in days[0]["by_judge"]] if days else []
    series = []
    for i, (profile, model) in enumerate(judges):
        points = []
        for day in days:
            day_query = _day_query(query, day, profile=profile, model=model)
            points.append(_point(day_query, day["by_judge"][i], day["day"]))
        series.append({"profile": profile, "model": model, "points": points})
    per_day = [_point(_day_query(query, day), day, day["day"]) for day in days]
    return {"query": _query_string(query), "per_day_query": _query_string(query, per_day=True),
            "totals": totals, "series": series, "per_day": per_day}


def _day_query(query: StatsQuery, day: dict[str, Any], **judge: str) -> StatsQuery:
    since, until = datetime.fromisoformat(day["since"]), datetime.fromisoformat(day["until"])
    return query.model_copy(update={"since": since, "until": until, **judge})


def jobs_data(owner: str) -> list[dict[str, Any]]:
    """The owner's newest jobs as GET /v1/jobs/{id} shows them (their rows in one query)."""
    from api.jobs import job_out

    query = select(Job).where(col(Job.owner) == owner).order_by(col(Job.created_at).desc()).limit(MAX_JOBS)
    with state().engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [job_out(Job.model_validate(dict(row))).model_dump(mode="json") for row in rows]


@bp.get("/")
def overview() -> str:
    query = _filters()
    owner = g.owner
    data = overview_data(owner, query)
    return render_template("dashboard/overview.html", data=data, jobs=jobs_data(owner), filters=query)


@bp.get("/data/overview")
def data_overview() -> Response:
    return json_response(overview_data(g.owner, _filters()))


@bp.get("/data/jobs")
def data_jobs() -> Response:
    return json_response({"jobs": jobs_data(g.owner)})


# ---------------------------------------------------------------- per-group tables

def groups_data(owner: str, query: StatsQuery) -> dict[str, Any]:
    """/v1/stats/agreement with group_by (a metadata key, or profile, model, job) for the filters:
    its by_group, one row per group."""
    report = agreement_report(owner, query) if query.group_by is not None else None
    return {"query": _query_string(query), "group_by": query.group_by, "report": report}


@bp.get("/groups")
def groups() -> str:
    query = _filters("group_by")
    keys = ["profile", "model", "job", *(k for k in stats.metadata_keys(state().engine, g.owner)
                                         if k not in stats.BUILTIN_GROUPS)]
    return render_template("dashboard/groups.html", data=groups_data(g.owner, query), filters=query, keys=keys)


@bp.get("/data/groups")
def data_groups() -> Response:
    return json_response(groups_data(g.owner, _filters("group_by")))


# ---------------------------------------------------------------- a job

@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    from api import jobs

    job = jobs.job_out(jobs.owned_job(job_id)).model_dump(mode="json")
    report = jobs.report(job_id).get_json()
    queue = jobs.human_queue(job_id).get_json()
    return render_template("dashboard/job.html", job=job, report=report, queue=queue)


@bp.post("/jobs/<job_id>/labels")
def label(job_id: str) -> BaseResponse:
    """One label from the queue page's form, through the code of POST /v1/jobs/{id}/labels."""
    from api import jobs

    job = jobs.owned_job(job_id)
    form = {"id": request.form.get("id", ""), "human_label": request.form.get("human_label") or None}
    bad = [problem(name, reason) for name, value in form.items() if value and (reason := bad_text(value))]
    if bad:  # as read_json_body refuses them: a NUL would reach PostgreSQL
        raise invalid(summarize(bad, "invalid label"), bad)
    try:
        labels = [LabelIn.model_validate(form)]
    except ValidationError as exc:
        problems = pydantic_problems(exc)
        raise invalid(summarize(problems, "invalid label"), problems) from None
    _, unknown = repo.attach_labels(state().engine, job.id, [(lb.id, lb.human_label) for lb in labels])
    if unknown:
        raise invalid("no such item in this job", [problem("id", f"unknown item id {labels[0].id[:100]!r}")])
    return redirect(url_for("dashboard.job_page", job_id=job.id))

