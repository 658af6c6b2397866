"""/v1/jobs: create, inspect, page through verdicts, label, report, cancel, export."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState
from pydantic import TypeAdapter, ValidationError
from werkzeug.routing import BaseConverter

from api.auth import authenticate, current_owner
from api.context import state
from api.errors import (
    ApiError,
    invalid,
    item_problems,
    json_response,
    not_found,
    problem,
    pydantic_problems,
    summarize,
)
from api.parsing import deeper_than, parse_query, plausible_job_id, read_json_body
from api.profiles import resolve_judging, webhook_url_of
from api.schemas import (
    MAX_ITEM_ID,
    CancelOut,
    EstimateCreate,
    EstimateOut,
    JobAccepted,
    JobCounts,
    JobCreate,
    JobOut,
    LabelIn,
    LabelsOut,
    QueueQuery,
    ReportQuery,
    VerdictsQuery,
    job_status,
)
from judge.jsonl import InputError, validate_items
from judge.profiles import JudgeProfile
from judge.records import PairItem
from store import queue, repo, webhooks
from store.models import Job

log = logging.getLogger("pjudge.api")
bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


class JobIdConverter(BaseConverter):
    """A job id path segment other than a static route's name beside it ("estimate"): GET
    /v1/jobs/estimate is then no route at all, and its Allow header names POST only."""

    regex = r"(?!estimate(?![^/]))[^/]+"


@bp.record_once
def _job_id_converter(setup: BlueprintSetupState) -> None:
    setup.app.url_map.converters["job_id"] = JobIdConverter


@bp.before_request
def _authenticate() -> None:
    authenticate()  # returns the owner; a before_request that returns a value would become the response


_LABELS = TypeAdapter(list[LabelIn])
MAX_IDEMPOTENCY_KEY = 255
MAX_NESTING = 32


# ---------------------------------------------------------------- helpers

@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def job_out(job: Job) -> JobOut:
    return JobOut(
        job_id=job.id, kind=job.kind, status=job_status(job.status),
        counts=JobCounts(items=job.n_items, verdicts=job.n_verdicts, calls=job.n_calls,
                         failed_calls=job.n_failed_calls, failed_items=job.n_failed_items,
                         awaiting_label=queue.count_waiting(state().engine, job.id,
                                                            queue.cascade_then(job.profile_json))),
        cost_usd=round(job.cost_usd or 0.0, 6), max_cost_usd=job.max_cost_usd, profile=job.profile_name,
        provider=job.provider, model=job.model,
        created_at=_aware(job.created_at),
        started_at=_aware(job.started_at), finished_at=_aware(job.finished_at),
    )


def owned_job(job_id: str) -> Job:
    """The caller's job; another key's job is a 404 like a missing one (its existence is not told)."""
    if not plausible_job_id(job_id):
        raise not_found()
    job = repo.get_job(state().engine, job_id, owner=current_owner())
    if job is None:
        raise not_found()
    return job


def _model(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(document.model_dump(mode="json"), status, headers)


def _validate_items(raw: Any) -> list[PairItem]:
    if not isinstance(raw, list) or not raw:
        raise invalid("items: a non-empty list of pair items is required",
                      [problem("items", "required: a non-empty list of pair items")])
    try:
        items = validate_items(enumerate(raw), "items")
    except InputError as exc:
        problems = item_problems(exc)
        raise invalid(summarize(problems, "invalid items"), problems) from None
    problems = [problem(f"items[{i}].id", f"at most {MAX_ITEM_ID} characters")
                for i, item in enumerate(items) if len(item.id) > MAX_ITEM_ID]
    # Free-form values nested deeper than this could be stored but never serialised back out.
    problems += [problem(f"items[{i}].{name}", f"nested more than {MAX_NESTING} levels deep")
                 for i, item in enumerate(items) for name in ("metadata", "persona")
                 if deeper_than(getattr(item, name), MAX_NESTING)]
    if problems:
        raise invalid(summarize(problems, "invalid items"), problems)
    return items


def _validate_labels(raw: Any, prefix: str) -> list[LabelIn]:
    try:
        labels = _LABELS.validate_python(raw)
    except ValidationError as exc:
        problems = pydantic_problems(exc, prefix)
        raise invalid(summarize(problems, "invalid labels"), problems) from None
    first: dict[str, int] = {}
    duplicates = []
    for index, label in enumerate(labels):
        if label.id in first:
            duplicates.append(problem(f"{prefix}[{index}].id", f"duplicate id (first at {prefix}[{first[label.id]}])"))
        first.setdefault(label.id, index)
    if duplicates:
        raise invalid(summarize(duplicates, "invalid labels"), duplicates)
    return labels


def _unknown_ids(unknown: Sequence[str], labels: Sequence[LabelIn], prefix: str) -> ApiError:
    index = {label.id: i for i, label in enumerate(labels)}
    shown = ", ".join(repr(i[:100]) for i in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    details = [problem(f"{prefix}[{index[i]}].id", f"unknown item id {i[:100]!r}") for i in unknown]
    return invalid(f"{len(unknown)} unknown item id(s): {shown}", details)


def daily_quota() -> repo.DailyQuota:
    config = state().settings.config
    return repo.DailyQuota(items=config.quota_items_per_day, cost_usd=config.quota_cost_per_day)


def quota_error(exc: repo.QuotaExceeded, field: str) -> ApiError:
    """429 with Retry-After while the window has to pass; 422 for a job larger than the quota itself."""
    if exc.what == "items":
        limit = f"this key's quota of {exc.limit:g} items per 24 h"
        used = f"{exc.used:g} item(s) in its jobs of the last 24 h, {exc.requested:g} in this one"
        detail = problem(field, f"{exc.requested:g} item(s); {exc.used:g} already used of {exc.limit:g} per 24 h")
    else:
        limit = f"this key's quota of {exc.limit:g} USD per 24 h"
        used = f"its jobs of the last 24 h cost {exc.used:g} USD"
        detail = problem(None, f"{exc.used:g} USD spent of {exc.limit:g} per 24 h")
    if exc.retry_after is None:
        return ApiError(422, "quota_exceeded", f"this job alone exceeds {limit}: split it",
                        [problem(field, f"{exc.requested:g} item(s), more than {exc.limit:g} per 24 h")])
    seconds = max(1, math.ceil(exc.retry_after))
    return ApiError(429, "quota_exceeded", f"{limit} is used up ({used}); retry after {seconds} s", [detail],
                    headers={"Retry-After": str(seconds)})


def check_job_size(items: Sequence[PairItem], field: str) -> None:
    """422 naming `field` when the job's pair items would store more than PJUDGE_MAX_JOB_MB of JSON.

    The one rule for every route that creates a job (/v1/jobs, the pairs /v1/personalization expands
    a small body into), checked before anything is stored. A sum of text lengths (characters, a
    lower bound of the bytes, O(1) per item) refuses a huge expansion without encoding it; below the
    limit the items are measured exactly as they will be stored."""
    limit_mb = state().settings.config.max_job_mb
    limit = int(limit_mb * 1024 * 1024)
    at_least = sum(len(item.id) + len(item.prompt) + len(item.response_a) + len(item.response_b)
                   + (len(item.persona) if isinstance(item.persona, str) else 0) for item in items)
    size = at_least
    if at_least <= limit:
        size = 0
        for item in items:
            size += len(item.__pydantic_serializer__.to_json(item, exclude_none=True))
            if size > limit:
                break
    if size > limit:
        shown = f"{size / (1024 * 1024):.1f}"
        raise ApiError(422, "job_too_large",
                       f"these {len(items)} pair items would store at least {shown} MB, more than {limit_mb:g} MB "
                       "per job (PJUDGE_MAX_JOB_MB): split the job",
                       [problem(field, f"{len(items)} pair items of at least {shown} MB; at most {limit_mb:g} MB")])


def budget_of(body: dict[str, Any]) -> float | None:
    """The job's `max_cost_usd`: absent or null (no budget), else a finite number of USD above 0."""
    value = body.get("max_cost_usd")
    if value is None:
        return None
    refused = invalid("max_cost_usd: a number of USD greater than 0",
                      [problem("max_cost_usd", "must be a number greater than 0 (or null: no budget)")])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refused
    try:
        budget = float(value)  # a JSON integer of 400 digits is valid JSON but no float
    except OverflowError:
        raise refused from None
    if not math.isfinite(budget) or budget <= 0:
        raise refused
    return budget


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise ApiError(400, "bad_request", "invalid Idempotency-Key header",
                       [problem("Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")])
    return key


def idempotency_conflict(job: Job) -> ApiError:
    """The same key with another request (another route, items, labels or profile field) is a client
    bug: say so rather than answer for the first request or drop the new one."""
    return ApiError(409, "conflict", "Idempotency-Key already used for a different request",
                    [problem("Idempotency-Key", f"used by job {job.id} for another request; "
                                                "send a new key for a new request")])


def _request_object(shape: str, fields: Mapping[str, object]) -> dict[str, Any]:
    """The request's JSON body: an object with none but `fields` (the shape is for the message)."""
    body = read_json_body()
    if not isinstance(body, dict):
        raise invalid(f"the body must be a JSON object {shape}", [problem(None, "expected an object")])
    unknown = [k for k in body if k not in fields]
    if unknown:
        details = [problem(str(k)[:100], "unknown field") for k in unknown]
        raise invalid(summarize(details, "invalid request"), details)
    return body


def staged_request(body: dict[str, Any]) -> repo.Staged | None:
    """The POST /v1/jobs body's `staged` and `start_early` (api.pages; None: a job of the items in the body)."""
    staged, early = body.get("staged"), body.get("start_early")
    for name, value in (("staged", staged), ("start_early", early)):
        if value is not None and not isinstance(value, bool):
            raise invalid(f"{name}: true or false", [problem(name, "must be a boolean")])
    if not staged:
        if early:
            raise invalid("start_early needs staged: true", [problem("start_early", "only with staged: true")])
        return None
    problems = [problem(name, "not with staged: true: send the items in pages (POST /v1/jobs/{id}/items)")
                for name in ("items", "labels") if body.get(name) not in (None, [])]
    if problems:
        raise invalid(summarize(problems, "invalid staged job"), problems)
    return repo.Staged(start_early=bool(early), max_open=state().settings.config.max_open_jobs)


# ---------------------------------------------------------------- routes

@bp.post("")
def create_job() -> Response:
    idempotency_key = _idempotency_key()
    body = _request_object("{items, profile, labels?}", JobCreate.model_fields)
    settings = state().settings
    staged = staged_request(body)  # a job filled in pages (api.pages): no items now
    items = _validate_items(body.get("items")) if staged is None else []
    profile = resolve_judging(body.get("profile"), settings, current_owner())
    if staged is not None and staged.start_early and isinstance(profile, JudgeProfile) and profile.mode == "batch":
        raise invalid("start_early is not supported with profile mode 'batch'",
                      [problem("start_early", "not supported with mode 'batch'")])
    if staged is None and body.get("labels") is not None:
        labels = _validate_labels(body["labels"], "labels")
        by_id = {label.id: label.human_label for label in labels}
        known = {item.id for item in items}
        missing = [label.id for label in labels if label.id not in known]
        if missing:
            raise _unknown_ids(missing, labels, "labels")
        items = [item.model_copy(update={"human_label": by_id[item.id]}) if item.id in by_id else item
                 for item in items]
    check_job_size(items, "items")
    max_cost_usd = budget_of(body)
    if max_cost_usd is not None and isinstance(profile, JudgeProfile) and profile.mode == "batch":
        # A batch-mode job sends its calls in provider batches that no per-batch reservation
        # bounds yet (worker.provider_batches): a budget it could not keep is refused.
        raise invalid("max_cost_usd is not supported with profile mode 'batch' yet",
                      [problem("max_cost_usd", "not supported with mode 'batch'")])
    webhook_url = webhook_url_of(body, settings)
    owner = current_owner()
    try:
        created = repo.create_job(state().engine, owner, items, profile, idempotency_key=idempotency_key,
                                  batch_size=settings.batch_size, quota=daily_quota(), max_cost_usd=max_cost_usd,
                                  webhook_url=webhook_url, staged=staged)
    except repo.QuotaExceeded as exc:
        raise quota_error(exc, "items") from None
    except repo.TooManyOpenJobs as exc:
        raise ApiError(409, "conflict", f"this key already holds {exc.limit} staged job(s) open to pages "
                       "(PJUDGE_MAX_OPEN_JOBS): start or cancel one first",
                       [problem("staged", f"at most {exc.limit} open staged jobs per key")]) from None
    job = created.job
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created.created:
        if not created.same_request:
            raise idempotency_conflict(job)
        headers["Idempotent-Replayed"] = "true"
        return _model(JobAccepted(job_id=job.id, status=job_status(job.status)), 200, headers)
    if webhook_url is not None:
        webhooks.secret_of(state().engine, owner)  # made now: readable (GET /v1/webhook-secret) before the event
    try:
        if staged is None:
            state().enqueue(job)
    except Exception as exc:  # noqa: BLE001 - the job is stored; the sweeper re-sends queued jobs
        # The type only: a broker error text can hold its URL, password included.
        log.warning("job %s stored but not enqueued (%s); it stays queued for the sweeper", job.id,
                    type(exc).__name__)
    return _model(JobAccepted(job_id=job.id, status=job_status(job.status)), 202, headers)


@bp.post("/estimate")
def estimate_job() -> Response:
    """Calls, tokens and cost of a job of these items and profile (judge.estimate), validated and
    bounded as POST /v1/jobs validates and bounds a job, at the price the server would charge it;
    nothing is stored, queued or called."""
    body = _request_object("{items, profile}", EstimateCreate.model_fields)
    items = _validate_items(body.get("items"))
    profile = resolve_judging(body.get("profile"), state().settings, current_owner())
    check_job_size(items, "items")
    from judge.estimate import estimate

    return _model(EstimateOut.model_validate(estimate(profile, items).document()))


@bp.get("/<job_id:job_id>")
def get_job(job_id: str) -> Response:
    return _model(job_out(owned_job(job_id)))


@bp.get("/<job_id>/verdicts")
def list_verdicts(job_id: str) -> Response:
    job = owned_job(job_id)
    query = parse_query(VerdictsQuery)
    after = int(query.cursor) if query.cursor is not None else -1
    budget = int(state().settings.config.verdict_page_mb * 1024 * 1024)
    engine = state().engine
    # Read in small chunks and encode as we go: a page ends at `limit` verdicts or once its JSON would
    # pass the byte budget (each call may hold PJUDGE_RAW_MAX_CHARS of raw answer), whichever is first.
    parts: list[bytes] = []
    size = 0
    more = False
    while not more:
        # One row more than asked tells whether another page exists, so the last page says null.
        wanted = min(VERDICT_CHUNK, query.limit - len(parts)) + 1
        rows = repo.list_verdicts(engine, job.id, after, wanted)
        for position, verdict in rows:
            encoded = _encoded(verdict.model_dump(mode="json"))
            if len(parts) == query.limit or (parts and size + len(encoded) + 1 > budget):
                more = True
                break
            parts.append(encoded)
            size += len(encoded) + 1
            after = position
        if len(rows) < wanted:
            break
    next_cursor = json.dumps(str(after) if more else None)
    body = b'{"verdicts":[' + b",".join(parts) + b'],"next_cursor":' + next_cursor.encode() + b"}"
    return Response(body, status=200, mimetype="application/json")


VERDICT_CHUNK = 50  # verdicts read from the database at a time while a page is filled


@bp.get("/<job_id>/queue")
def human_queue(job_id: str) -> Response:
    """The items waiting for a human label (store.queue), a page at a time: ends at `limit` entries
    or at the byte budget of a verdicts page, like /verdicts. The cursor is the last entry's position."""
    job = owned_job(job_id)
    query = parse_query(QueueQuery)
    after = int(query.cursor) if query.cursor is not None else None
    then = queue.cascade_then(job.profile_json)
    budget = int(state().settings.config.verdict_page_mb * 1024 * 1024)
    engine = state().engine
    parts: list[bytes] = []
    size = 0
    more = False
    while not more:
        wanted = min(VERDICT_CHUNK, query.limit - len(parts)) + 1
        try:
            entries = queue.waiting_page(engine, job.id, then, after, wanted)
        except queue.UnknownCursor:
            raise ApiError(400, "bad_request", "invalid query parameter cursor",
                           [problem("cursor", "no such entry: pass a next_cursor of this job's queue")]) from None
        for entry in entries:
            encoded = _encoded({"item": entry.item, "verdict": entry.verdict})
            if len(parts) == query.limit or (parts and size + len(encoded) + 1 > budget):
                more = True
                break
            parts.append(encoded)
            size += len(encoded) + 1
            after = entry.position
        if len(entries) < wanted:
            break
    next_cursor = json.dumps(str(after) if more else None)
    body = b'{"items":[' + b",".join(parts) + b'],"next_cursor":' + next_cursor.encode() + b"}"
    return Response(body, status=200, mimetype="application/json")


def _encoded(document: Any) -> bytes:
    """`document` as json_response writes it (UTF-8, no ASCII escapes)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@bp.post("/<job_id>/labels")
def attach_labels(job_id: str) -> Response:
    job = owned_job(job_id)
    body = read_json_body()
    if not isinstance(body, list):
        raise invalid("the body must be a JSON array of {id, human_label}", [problem(None, "expected an array")])
    labels = _validate_labels(body, "")
    updated, unknown = repo.attach_labels(state().engine, job.id, [(lb.id, lb.human_label) for lb in labels])
    if unknown:
        raise _unknown_ids(unknown, labels, "")
    return _model(LabelsOut(updated=updated, labels=len(labels)))


@bp.get("/<job_id>/report")
def report(job_id: str) -> Response:
    job = owned_job(job_id)
    query = parse_query(ReportQuery)
    from store import stats  # numpy/scipy only when a report is asked for

    options: dict[str, Any] = {"threshold": query.threshold, "hitl": query.hitl, "group_by": query.group_by,
                               "target_accuracy": query.target_accuracy, "delta": query.delta}
    engine = state().engine
    then = queue.cascade_then(job.profile_json)
    if then is not None and job.n_verdicts > state().settings.stats_max_verdicts:
        # The per-stage section reads every verdict (below, or in build_report): the cap of any
        # report that loads verdicts, so that a GET cannot make the server read millions of rows.
        limit = state().settings.stats_max_verdicts
        raise ApiError(422, "too_many_verdicts",
                       f"this cascade job has {job.n_verdicts} verdicts and its per-stage report must read them "
                       f"all (at most {limit} are read, PJUDGE_STATS_MAX_VERDICTS)",
                       [problem(None, f"{job.n_verdicts} verdicts to read, more than {limit}")])
    report = stats.report(engine, stats.Selection(job_id=job.id), **options)
    if report is not None and then is not None:
        # A cascade's per-stage section (calibration.stages) from the verdict columns it needs,
        # streamed a page at a time without the calls; the fallback below adds it in build_report.
        from calibration.from_counts import json_safe
        from calibration.stages import stage_report

        stages = stage_report(queue.stage_verdicts(engine, job.id), then)
        if stages is not None:
            report["cascade_stages"] = json_safe(stages)
    if report is None:  # group_by over a metadata key the job's verdicts are not all summarized under
        # From the verdicts, in memory (without the calls' raw answers): the same cap as
        # /v1/stats/agreement, refused rather than fall over.
        limit = state().settings.stats_max_verdicts
        n = repo.count_verdicts(engine, job.id)
        if n > limit:
            raise too_many_verdicts(n, limit, query.group_by, "")
        from calibration.report import build_report

        report = build_report(repo.all_verdicts(engine, job.id, with_raw=False), **options,
                              cascade_then=then or "human")
    return json_response(report)


def too_many_verdicts(n: int, limit: int, group_by: str | None, narrow: str) -> ApiError:
    """422 of a report that would have to load more verdicts than PJUDGE_STATS_MAX_VERDICTS."""
    return ApiError(422, "too_many_verdicts",
                    f"{n} verdicts match and group_by={group_by!r} must read them all; {narrow}group by a "
                    f"summarized key (at most {limit} verdicts are read, PJUDGE_STATS_MAX_VERDICTS)",
                    [problem("group_by", f"{n} verdicts to read, more than {limit}")])


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    job = owned_job(job_id)
    engine = state().engine
    if not repo.cancel_job(engine, job.id):
        status = repo.job_status(engine, job.id) or job.status
        if status != "cancelled":
            raise ApiError(409, "conflict", f"job is already {status}", [problem("status", status)])
    return _model(CancelOut(job_id=job.id, status="cancelled"))


@bp.get("/<job_id>/export")
def export(job_id: str) -> Response:
    job = owned_job(job_id)
    from api.exports import export_response

    return export_response(job)
