"""Staged jobs (issue 16): a job created without items, filled in pages, then started, so that a
job of a million items never passes through the API's memory whole.

A staged job is made by store.repo.create_job(staged=Staged(...)): status "open" and
open_for_items (or, with start_early, status "queued" and open_for_items: its pages are judged as
they arrive). Then:

- `add_page`: one page in one transaction, all or nothing (a JSON page, or an NDJSON upload the
  API has validated and spooled to a file): the job row is locked first (pages of a job take
  turns), a page sent again under its Idempotency-Key adds nothing and answers as the first time,
  the rows go in at the next positions in chunks, an id the job already holds is refused naming
  the page's line, and the job's limits and its owner's daily quota are checked for the page.
  Each page moves the job's quota_at to its own time: the whole job counts in its owner's daily
  quota from its latest page (an empty job filled a day after its creation counts from then, not
  in a window already past). Its metadata is folded into plan_state (store.summaries.PlanState)
  on the way.
- `start`: fixes the summary plan from plan_state, closes the job to pages, marks it queued and
  moves quota_at to the start (its cost counts from then); a job started early is only closed
  (and done at once if every item has its verdict).
- `task_ranges`: the [start, end) ranges of a span of positions, lazily (1M items are 31,250
  ranges of 32: sent one by one, never listed).

Memory is bounded by a chunk of rows (CHUNK) and a plan state (at most MAX_PLANNED_KEYS keys of
MAX_GROUP_VALUES names each), whatever the job's size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlmodel import col

from store import repo, summaries
from store.bulk import insert_many
from store.db import Bind, writing
from store.models import Job, JobItem, JobPage, table_of, utcnow

OPEN = "open"  # a staged job's status until it is started
CHUNK = 2000  # rows inserted (and their ids checked) at a time


@dataclass(frozen=True)
class PageRow:
    """One item of a page, as stored: `where` names it in errors ("items[3]", "line 4")."""

    where: str
    item_id: str
    item_json: str


class PageFingerprint:
    """SHA-256 of a page's stored items in order: a replayed page must have the same."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256(b"pjudge-page")

    def add(self, item_json: str) -> None:
        self._digest.update(b"\n")
        self._digest.update(item_json.encode("utf-8"))

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@dataclass(frozen=True)
class Page:
    """A validated page: its rows (read once, in order), how many, their fingerprint and the
    metadata group names they hold (a PlanState of the page alone)."""

    rows: Iterable[PageRow]
    count: int
    fingerprint: str
    plan: summaries.PlanState


@dataclass(frozen=True)
class Limits:
    max_job_items: int
    quota: repo.DailyQuota | None = None


@dataclass(frozen=True)
class PageAdded:
    job: Job  # after the page
    first_position: int
    count: int
    replayed: bool = False


class PageRefused(Exception):
    """The page cannot be added; `reason` says why (the API's status code follows it)."""

    def __init__(self, reason: Literal["closed", "conflict", "duplicate", "too_many"], message: str,
                 where: str | None = None, status: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.where, self.status = reason, message, where, status


def takes_pages(job: Job) -> bool:
    return job.open_for_items and (job.status == OPEN or job.status in repo.ACTIVE)


def add_page(bind: Bind, job_id: str, owner: str, page: Page, page_key: str | None, limits: Limits) -> PageAdded:
    """Store `page` at the end of the job in one transaction (see the module docstring). Raises
    PageRefused, or repo.QuotaExceeded; either leaves nothing stored."""
    with writing(bind) as conn:
        job = _locked(conn, job_id)
        if page_key is not None:
            stored = conn.execute(select(JobPage).where(col(JobPage.job_id) == job_id,
                                                        col(JobPage.page_key) == page_key)).mappings().first()
            if stored is not None:
                if stored["fingerprint"] != page.fingerprint:
                    raise PageRefused("conflict", f"Idempotency-Key already used for another page of job {job_id}",
                                      "Idempotency-Key")
                return PageAdded(job, stored["first_position"], stored["n_items"], replayed=True)
            # A key that made one of the owner's jobs is another route's: decided under the owner's
            # lock, which a new job under a key takes too (repo.create_job), so one of the two wins.
            repo.lock_quota(conn, owner)
            made = repo.find_job_by_idempotency_key(conn, owner, page_key)
            if made is not None:
                raise PageRefused("conflict", f"Idempotency-Key already used by job {made.id} for another request",
                                  "Idempotency-Key")
        if not takes_pages(job):
            raise PageRefused("closed", f"job is {job.status}: it takes no more items"
                              + (" (started)" if job.status in repo.ACTIVE else ""), status=job.status)
        if job.n_items + page.count > limits.max_job_items:
            # Named by the first row too many (read up to it: the page is refused anyway).
            over = next(islice(page.rows, max(0, limits.max_job_items - job.n_items), None), None)
            raise PageRefused("too_many", f"this page of {page.count} item(s) would take the job to "
                              f"{job.n_items + page.count} items, more than {limits.max_job_items} per job",
                              over.where if over is not None else None)
        if limits.quota is not None and limits.quota.limited:
            repo.lock_quota(conn, owner)
            repo.check_staged_quota(conn, owner, job_id, job.n_items, page.count, limits.quota)
        first = job.n_items
        stored_count = _insert_rows(conn, job_id, first, page.rows)
        if stored_count != page.count:  # the caller counted what it validated: a bug, not bad input
            raise RuntimeError(f"page rows changed between validation and storing ({stored_count} != {page.count})")
        now = utcnow()
        values: dict[str, object] = {"n_items": first + page.count, "updated_at": now, "quota_at": now}
        if job.plan_state is not None:
            state: summaries.PlanState = json.loads(job.plan_state)
            summaries.merge_plan_states(state, page.plan, summaries.MAX_PLANNED_KEYS)
            values["plan_state"] = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
        conn.execute(update(Job).where(col(Job.id) == job_id).values(**values))
        if page_key is not None:
            conn.execute(JobPage.__table__.insert().values(  # type: ignore[attr-defined]  # set by SQLModel
                job_id=job_id, page_key=page_key, first_position=first, n_items=page.count,
                fingerprint=page.fingerprint, created_at=utcnow()))
        job = job.model_copy(update=values)
    return PageAdded(job, first, page.count)


def _locked(conn: Connection, job_id: str) -> Job:
    """The job row, locked for this transaction (an UPDATE first: PostgreSQL's row lock, SQLite's
    write lock), so that concurrent pages of a job take turns and positions never collide."""
    conn.execute(update(Job).where(col(Job.id) == job_id).values(updated_at=utcnow()))
    row = conn.execute(select(Job).where(col(Job.id) == job_id)).mappings().one()
    return Job.model_validate(dict(row))


def _insert_rows(conn: Connection, job_id: str, first: int, rows: Iterable[PageRow]) -> int:
    """Insert `rows` at positions first, first + 1, ... in chunks; PageRefused("duplicate") naming
    the first row whose id the job (or this page, earlier) already holds."""
    position = first
    chunk: list[PageRow] = []

    def flush() -> None:
        nonlocal position
        seen: dict[str, str] = {}
        for row in chunk:
            if row.item_id in seen:
                raise PageRefused("duplicate", f"duplicate id {row.item_id[:100]!r} (first at {seen[row.item_id]})",
                                  row.where)
            seen[row.item_id] = row.where
        held = set(conn.execute(select(col(JobItem.item_id)).where(
            col(JobItem.job_id) == job_id, col(JobItem.item_id).in_(list(seen)))).scalars())
        for row in chunk:
            if row.item_id in held:
                raise PageRefused("duplicate", f"duplicate id {row.item_id[:100]!r}: the job already holds an "
                                  "item with this id (from an earlier page, or earlier in this one)", row.where)
        insert_many(conn, table_of(JobItem), [
            {"job_id": job_id, "item_id": row.item_id, "position": position + offset, "item_json": row.item_json}
            for offset, row in enumerate(chunk)])
        position += len(chunk)
        chunk.clear()

    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    return position - first


@dataclass(frozen=True)
class Started:
    job: Job
    started: bool  # False: it was already started (nothing changed)
    enqueue_from: int  # the first position not yet sent to the workers


def start(bind: Bind, job_id: str, quota: repo.DailyQuota | None = None) -> Started:
    """Close a staged job to pages and let it run: its summary plan fixed from the pages' plan
    state (and the keys it cannot summarize recorded as overflowing), status queued. A job started
    early is closed (done at once when every item already has its verdict); its pages were sent
    to the workers as they came, so `enqueue_from` is its item count. PageRefused("closed") for a
    job with no items or one cancelled; an already started job comes back unchanged. Under a
    `quota`, repo.QuotaExceeded when it is used up (as for a new job: the owner's cost spent)."""
    with writing(bind) as conn:
        job = _locked(conn, job_id)
        if not job.open_for_items:
            if job.status in ("cancelled", "failed"):
                raise PageRefused("closed", f"job is {job.status}", status=job.status)
            return Started(job, started=False, enqueue_from=job.n_items)
        if job.n_items == 0:
            raise PageRefused("closed", "the job has no items yet: add pages (POST /v1/jobs/{id}/items) first",
                              status=job.status)
        early = job.status != OPEN
        values: dict[str, object] = {"open_for_items": False, "plan_state": None, "updated_at": utcnow()}
        if not early:  # counted from now (one started early counts from its latest page)
            if quota is not None and quota.limited:  # as a new job: none once the cost quota is spent
                repo.lock_quota(conn, job.owner)
                repo.check_staged_quota(conn, job.owner, job_id, job.n_items, 0, quota)
            values["quota_at"] = values["updated_at"]
            plan = summaries.plan_of_state(json.loads(job.plan_state or "{}"))
            summaries.record_overflow(conn, job_id, [key for key, kept in plan.items()
                                                     if not kept and summaries.overflow_key(key)])
            values.update(status="queued", summary_keys=json.dumps(plan, ensure_ascii=False))
        conn.execute(update(Job).where(col(Job.id) == job_id).values(**values))
        if early:
            repo.finish_if_complete(conn, job_id)  # in this transaction: the job row is locked
        row = conn.execute(select(Job).where(col(Job.id) == job_id)).mappings().one()
        job = Job.model_validate(dict(row))
    return Started(job, started=True, enqueue_from=job.n_items if early else 0)


def task_ranges(start: int, end: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """[start, end) in ranges of `batch_size` positions, one at a time."""
    for first in range(start, end, batch_size):
        yield first, min(first + batch_size, end)
