"""Jobs of any size in constant memory (issue 16): staged jobs filled in pages, and every verdict
as one stream.

    POST /v1/jobs {"profile": ..., "staged": true[, "start_early": true]}   -> 202 {job_id, status: "open"}
    POST /v1/jobs/{id}/items  {"items": [...]}  or an NDJSON body            -> 200 {first_position, added, items}
    POST /v1/jobs/{id}/start                                                  -> 202 {job_id, status: "queued"}
    GET  /v1/jobs/{id}/verdicts.jsonl                                         -> every verdict, one a line

The unit of atomicity is one request to /items: a JSON page ({"items": [...]}, at most
PJUDGE_MAX_PAGE_ITEMS items and PJUDGE_MAX_BODY_MB), or an NDJSON upload (Content-Type
application/x-ndjson, one pair item a line, up to PJUDGE_MAX_UPLOAD_MB: a whole job may be one).
Its items are all stored or none is: an upload is read a line at a time, each line validated (errors
name `line N`), the valid lines spooled to a temporary file, and only a wholly valid upload is
stored, in one transaction (store.pages.add_page). A request sent again with its Idempotency-Key
adds nothing and answers as the first time (Idempotent-Replayed: true); an id the job already
holds is a 422 naming the line. A page of a started, finished or cancelled job is a 409; another
key's job is a 404. Under a daily quota (PJUDGE_QUOTA_*) each page is checked as a new job's items
would be, and the job counts in the quota from its latest page and from its start (jobs.quota_at):
a /start once the key's cost quota is spent is a 429, as a new job is.

With start_early the job runs from its first page: each page's items go to the workers when stored,
and the job cannot be done before /start closes it. Otherwise nothing runs until /start, which
fixes the job's summary plan and sends its batches, read as ranges of positions (never a list).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from flask import Blueprint, Request, Response, request
from pydantic import ValidationError

from api.auth import authenticate, current_owner
from api.context import ApiSettings, state
from api.errors import ApiError, invalid, json_response, problem, summarize
from api.jobs import (
    MAX_NESTING,
    _encoded,
    _idempotency_key,
    _validate_items,
    daily_quota,
    idempotency_conflict,
    log,
    owned_job,
    quota_error,
)
from api.parsing import deeper_than, json_line, read_json_body
from api.schemas import MAX_ITEM_ID, JobAccepted, PageAccepted, job_status
from judge.jsonl import problems_from_validation
from judge.records import PairItem
from store import pages, repo, summaries
from store.models import Job

bp = Blueprint("pages", __name__, url_prefix="/v1/jobs")
NDJSON = "application/x-ndjson"
MAX_PROBLEMS = 100  # an upload's bad lines reported before reading stops
VERDICT_CHUNK = 100  # verdicts (with their calls) read from the database at a time by verdicts.jsonl


@bp.before_request
def _authenticate() -> None:
    authenticate()


def is_upload(path: str, content_type: str | None) -> bool:
    """Whether a request is an NDJSON upload of items (bounded by PJUDGE_MAX_UPLOAD_MB, not by
    PJUDGE_MAX_BODY_MB): what the server checks before the app has matched a route."""
    mimetype = (content_type or "").split(";")[0].strip().lower()
    return mimetype == NDJSON and path.startswith("/v1/jobs/") and path.rstrip("/").endswith("/items")


def upload_limit(settings: ApiSettings, current: Request | None = None) -> int | None:
    """The body limit of this request when it is an upload (the request's own limit raised to it),
    else None (PJUDGE_MAX_BODY_MB applies)."""
    current = current or request
    if not is_upload(current.path, current.content_type):
        return None
    current.max_content_length = settings.max_upload_bytes
    return settings.max_upload_bytes


# ---------------------------------------------------------------- pages

def _json_page(body: Any, limit: int) -> pages.Page:
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object {items} (or NDJSON: Content-Type application/x-ndjson)",
                      [problem(None, "expected an object with one field, items")])
    unknown = [problem(str(name)[:100], "unknown field: a page is {items}") for name in body if name != "items"]
    if unknown:
        raise invalid(summarize(unknown, "invalid page"), unknown)
    raw = body.get("items")
    if isinstance(raw, list) and len(raw) > limit:
        raise invalid(f"a page holds at most {limit} items (PJUDGE_MAX_PAGE_ITEMS): send {len(raw)} in smaller pages",
                      [problem("items", f"{len(raw)} items, at most {limit}")])
    items = _validate_items(raw)
    rows = [pages.PageRow(f"items[{index}]", item.id, item.model_dump_json(exclude_none=True))
            for index, item in enumerate(items)]
    return _page(rows, items)


def _page(rows: list[pages.PageRow], items: list[PairItem]) -> pages.Page:
    fingerprint = pages.PageFingerprint()
    for row in rows:
        fingerprint.add(row.item_json)
    plan: summaries.PlanState = {}
    summaries.add_to_plan_state(plan, items, summaries.MAX_PLANNED_KEYS)
    return pages.Page(rows, len(rows), fingerprint.hexdigest(), plan)


def _line_item(number: int, raw: bytes) -> tuple[PairItem | None, list[dict[str, str | None]]]:
    """One NDJSON line as a pair item, or its problems (fields named `line N.field`)."""
    where = f"line {number}"
    try:
        document = json_line(raw)
    except ValueError as exc:
        return None, [problem(where, str(exc))]
    if not isinstance(document, dict):
        return None, [problem(where, "expected a JSON object (a pair item)")]
    try:
        item = PairItem.model_validate(document)
    except ValidationError as exc:
        return None, [problem(f"{where}.{p.field}" if p.field else where, p.message)
                      for p in problems_from_validation(exc, number)]
    problems = []
    if len(item.id) > MAX_ITEM_ID:
        problems.append(problem(f"{where}.id", f"at most {MAX_ITEM_ID} characters"))
    problems += [problem(f"{where}.{name}", f"nested more than {MAX_NESTING} levels deep")
                 for name in ("metadata", "persona") if deeper_than(getattr(item, name), MAX_NESTING)]
    return (None, problems) if problems else (item, [])


class _Spool:
    """The valid lines of an upload in a temporary file (one JSON [where, id, item_json] a line),
    read back once when they are stored."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, row: pages.PageRow) -> None:
        self.file.write(json.dumps([row.where, row.item_id, row.item_json], ensure_ascii=False).encode() + b"\n")
        self.count += 1

    def rows(self) -> Iterator[pages.PageRow]:
        self.file.seek(0)
        for line in self.file:
            where, item_id, item_json = json.loads(line)
            yield pages.PageRow(where, item_id, item_json)

    def close(self) -> None:
        self.file.close()


def _ndjson_page(spool: _Spool, max_items: int, max_line: int) -> pages.Page:
    """Read the NDJSON body a line at a time into `spool` (see the module docstring)."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):  # as read_json_body: lines are decoded as UTF-8, whatever is declared
        raise ApiError(400, "bad_request", "an NDJSON upload must be UTF-8 encoded",
                       [problem("Content-Type", f"charset {charset[:40]!r}: send UTF-8 (or no charset)")])
    fingerprint = pages.PageFingerprint()
    plan: summaries.PlanState = {}
    problems: list[dict[str, str | None]] = []
    stream = request.stream
    number = 0
    while len(problems) < MAX_PROBLEMS:
        raw = stream.readline(max_line + 1)
        if not raw:
            break
        number += 1
        if len(raw) > max_line and not raw.endswith(b"\n"):
            problems.append(problem(f"line {number}", f"longer than {max_line} bytes"))
            break
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark, as read_json_body allows
        if not raw.strip():
            continue
        item, found = _line_item(number, raw)
        if item is None:
            problems += found
            continue
        if spool.count >= max_items:
            problems.append(problem(f"line {number}", f"more than {max_items} items: the job's limit "
                                    "(PJUDGE_MAX_JOB_ITEMS) is passed"))
            break
        item_json = item.model_dump_json(exclude_none=True)
        fingerprint.add(item_json)
        summaries.add_to_plan_state(plan, (item,), summaries.MAX_PLANNED_KEYS)
        spool.add(pages.PageRow(f"line {number}", item.id, item_json))
    if problems:
        raise invalid(summarize(problems, "invalid items (nothing was stored)"), problems[:MAX_PROBLEMS])
    if spool.count == 0:
        raise invalid("the upload holds no items", [problem(None, "no NDJSON lines")])
    return pages.Page(spool.rows(), spool.count, fingerprint.hexdigest(), plan)


def _refused(exc: pages.PageRefused) -> ApiError:
    if exc.reason == "closed":
        return ApiError(409, "conflict", exc.message, [problem("status", exc.status or "")])
    if exc.reason == "conflict":
        return ApiError(409, "conflict", exc.message, [problem("Idempotency-Key", "send a new key for a new page")])
    return invalid(exc.message, [problem(exc.where, exc.message)])


@bp.post("/<job_id>/items")
def add_items(job_id: str) -> Response:
    job = owned_job(job_id)
    key = _idempotency_key()
    made = repo.find_job_by_idempotency_key(state().engine, current_owner(), key) if key is not None else None
    if made is not None:  # the key of a POST /v1/jobs (or /v1/personalization): another route, another request
        raise idempotency_conflict(made)
    if key is None and not pages.takes_pages(job):  # nothing to replay: refuse before reading the body
        raise _refused(pages.PageRefused("closed", f"job is {job.status}: it takes no more items", status=job.status))
    settings = state().settings
    config = settings.config
    limits = pages.Limits(config.max_job_items, daily_quota())
    spool: _Spool | None = None
    try:
        if request.mimetype == NDJSON:
            spool = _Spool()
            page = _ndjson_page(spool, config.max_job_items, settings.max_body_bytes)
        else:
            page = _json_page(read_json_body(), config.max_page_items)
        try:
            added = pages.add_page(state().engine, job.id, current_owner(), page, key, limits)
        except pages.PageRefused as exc:
            raise _refused(exc) from None
        except repo.QuotaExceeded as exc:
            raise quota_error(exc, "items") from None
    finally:
        if spool is not None:
            spool.close()
    if not added.replayed and added.job.status in repo.ACTIVE:  # started early: judge the page now
        _send(added.job, added.first_position, added.first_position + added.count)
    out = PageAccepted(job_id=job.id, status=job_status(added.job.status), first_position=added.first_position,
                       added=added.count, items=added.job.n_items)
    headers = {"Idempotent-Replayed": "true"} if added.replayed else None
    return json_response(out.model_dump(mode="json"), 200, headers)


def _send(job: Job, start: int, end: int) -> None:
    """Send positions [start, end) of a job running early to the workers; a failure leaves them
    to the sweeper (the job stays active), as POST /v1/jobs leaves an unsent job."""
    send = state().enqueue_range or _enqueue_range
    try:
        send(job, start, end)
    except Exception as exc:  # noqa: BLE001 - stored; the sweeper re-sends the missing batches
        log.warning("job %s items [%d, %d) stored but not enqueued (%s)", job.id, start, end, type(exc).__name__)


def _enqueue_range(job: Job, start: int, end: int) -> int:
    from worker.tasks import enqueue_range

    return enqueue_range(job, start, end)


@bp.post("/<job_id>/start")
def start(job_id: str) -> Response:
    job = owned_job(job_id)
    try:
        started = pages.start(state().engine, job.id, daily_quota())
    except pages.PageRefused as exc:
        raise _refused(exc) from None
    except repo.QuotaExceeded as exc:
        raise quota_error(exc, "items") from None
    job = started.job
    if started.started and started.enqueue_from == 0:
        try:
            state().enqueue(job)
        except Exception as exc:  # noqa: BLE001 - the job is queued; the sweeper re-sends queued jobs
            log.warning("job %s started but not enqueued (%s); it stays queued for the sweeper", job.id,
                        type(exc).__name__)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not started.started:
        headers["Idempotent-Replayed"] = "true"
    return json_response(JobAccepted(job_id=job.id, status=job_status(job.status)).model_dump(mode="json"),
                         202 if started.started else 200, headers)


# ---------------------------------------------------------------- every verdict, streamed

@bp.get("/<job_id>/verdicts.jsonl")
def verdicts_jsonl(job_id: str) -> Response:
    """Every verdict of the job in input order, one JSON document a line, each as /verdicts pages
    them: read by keyset chunks of VERDICT_CHUNK while the response is written."""
    job = owned_job(job_id)
    engine = state().engine

    def lines() -> Iterator[bytes]:
        after = -1
        while True:
            rows = repo.list_verdicts(engine, job.id, after, VERDICT_CHUNK)
            for _, verdict in rows:
                yield _encoded(verdict.model_dump(mode="json")) + b"\n"
            if len(rows) < VERDICT_CHUNK:
                return
            after = rows[-1][0]

    return Response(lines(), mimetype=NDJSON,
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.verdicts.jsonl"'})
