"""The queries the API and the workers need. Each takes a bind: a Connection, whose transaction
the caller owns (several calls, and the caller's own writes, commit together), or an Engine, for
which the function opens its own short transaction (store.db.reading / writing), so callers never
hold a session across network calls. Row <-> record conversions are store.rows'."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, SQLColumnExpression, Table, and_, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlmodel import SQLModel, col

from judge.cascade import judge_info
from judge.profiles import JudgeProfile, Judging, judging_from_stored, stored_judging
from judge.providers.base import CallResult
from judge.records import Call, PairItem, Verdict
from store import summaries, webhooks
from store.bulk import in_slices, insert_many
from store.db import Bind, one_round_trip, reading, writing
from store.models import (
    MAX_POSITION,
    ApiKey,
    CacheEntry,
    CallRow,
    Job,
    JobInput,
    JobItem,
    JobPage,
    VerdictRow,
    table_of,
    utcnow,
)
from store.rows import call_columns, call_from_row, call_row, verdict_from_row, verdict_row

ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled", "budget_exhausted")


def insert_ignore(engine_or_conn: Engine | Connection, table: type[SQLModel] | Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for the connected dialect."""
    dialect = engine_or_conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database {dialect}")


# ---------------------------------------------------------------- API keys

def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(bind: Bind, name: str = "") -> tuple[str, ApiKey]:
    key = "pj_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:10])
    with writing(bind) as conn:
        result = conn.execute(insert(ApiKey).values(**row.model_dump(exclude={"id"})))
        row.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    return key, row


def list_api_keys(bind: Bind) -> list[ApiKey]:
    with reading(bind) as conn:
        rows = conn.execute(select(ApiKey).order_by(col(ApiKey.id))).mappings().all()
    return [ApiKey.model_validate(dict(r)) for r in rows]


def revoke_api_key(bind: Bind, key_id_or_prefix: str) -> int:
    condition = col(ApiKey.prefix) == key_id_or_prefix
    if key_id_or_prefix.isdigit():
        condition = col(ApiKey.id) == int(key_id_or_prefix)
    with writing(bind) as conn:
        result = conn.execute(update(ApiKey).where(condition, col(ApiKey.revoked_at).is_(None))
                              .values(revoked_at=utcnow()))
    return result.rowcount or 0


def key_is_active(bind: Bind, key_hash: str) -> bool:
    with reading(bind) as conn:
        row = conn.execute(
            select(col(ApiKey.id)).where(col(ApiKey.key_hash) == key_hash, col(ApiKey.revoked_at).is_(None))
        ).first()
    return row is not None


# ---------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Staged:
    """A job created empty and filled in pages (store.pages); `start_early`: its pages are judged
    as they arrive, before POST /v1/jobs/{id}/start."""

    start_early: bool = False
    # Most staged jobs its owner may hold open to pages at once, this one included (None: no limit).
    max_open: int | None = None

    def inputs(self) -> dict[str, Any]:
        """What the request fingerprint counts beside the profile (no items yet)."""
        return {"staged": True, "start_early": self.start_early}


@dataclass(frozen=True)
class JobCreated:
    job: Job
    created: bool
    # False when an earlier job holds the Idempotency-Key but was made from another request
    # (another route, items, labels or profile): the caller answers 409, not the old job.
    same_request: bool = True


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def request_fingerprint(kind: str, items: Iterable[Mapping[str, Any]], profile: Mapping[str, Any],
                        inputs: Any = None, max_cost_usd: float | None = None,
                        webhook_url: str | None = None) -> str:
    """SHA-256 of the request a job was made from, as it is stored: its kind (one creating route
    each: /v1/jobs, /v1/personalization), its items in order with their labels, the resolved
    profile, the stored inputs, the budget and the webhook URL (each only when there is one:
    fingerprints of jobs without stay as they were). Two requests that would make the same job have the same
    fingerprint; 1 and 1.0, or key order, make no difference (canonical JSON of the stored forms)."""
    head: dict[str, Any] = {"kind": kind, "profile": profile, "inputs": inputs}
    if max_cost_usd is not None:
        head["max_cost_usd"] = float(max_cost_usd)
    if webhook_url is not None:
        head["webhook_url"] = webhook_url
    digest = hashlib.sha256(_canonical(head))
    for item in items:
        digest.update(b"\n")
        digest.update(_canonical(item))
    return digest.hexdigest()


def _stored_form(value: Any) -> Any:
    """A JSON value as it reads back from the database (tuples as lists, floats as stored)."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def fingerprint_of_request(kind: str, items: Sequence[PairItem], profile: Judging,
                           inputs: Mapping[str, Any] | None, max_cost_usd: float | None = None,
                           webhook_url: str | None = None) -> str:
    return request_fingerprint(kind, (json.loads(item.model_dump_json(exclude_none=True)) for item in items),
                               stored_judging(profile),
                               None if inputs is None else _stored_form(inputs), max_cost_usd, webhook_url)


def fingerprint_of_stored_job(conn: Connection, job_id: str) -> str | None:
    """The fingerprint of a job stored before fingerprints were (migration 0007, and any such job
    found on a replay), from its stored items, profile and inputs."""
    # Such jobs have no budget (max_cost_usd came later), and migration 0007 runs this on a jobs table
    # without that column.
    job = conn.execute(select(col(Job.kind), col(Job.profile_json)).where(col(Job.id) == job_id)).first()
    if job is None:
        return None
    items = conn.execute(select(col(JobItem.item_json)).where(col(JobItem.job_id) == job_id)
                         .order_by(col(JobItem.position))).scalars()
    inputs = conn.execute(select(col(JobInput.inputs_json))
                          .where(col(JobInput.job_id) == job_id)).scalar_one_or_none()
    return request_fingerprint(job.kind, (json.loads(text) for text in items),
                               stored_judging(judging_from_stored(job.profile_json)),
                               None if inputs is None else json.loads(inputs))


def _replayed(bind: Bind, existing: Job, fingerprint: str) -> JobCreated:
    stored = existing.request_fingerprint
    if stored is None:
        with reading(bind) as conn:
            stored = fingerprint_of_stored_job(conn, existing.id)
    return JobCreated(existing, created=False, same_request=stored == fingerprint)


QUOTA_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class DailyQuota:
    """What one owner's jobs created in the last 24 h may add up to (None: no limit)."""

    items: int | None = None
    cost_usd: float | None = None

    @property
    def limited(self) -> bool:
        return self.items is not None or self.cost_usd is not None


class TooManyOpenJobs(Exception):
    """A new staged job would take its owner past Staged.max_open jobs open to pages."""

    def __init__(self, limit: int):
        super().__init__(f"{limit} staged job(s) already open to pages")
        self.limit = limit


class QuotaExceeded(Exception):
    """A new job would take its owner over a DailyQuota. `retry_after`: seconds until enough of the
    window has passed for the same job to fit; None when it never will (it alone is too large)."""

    def __init__(self, what: str, limit: float, used: float, requested: float, retry_after: float | None):
        super().__init__(f"quota of {limit:g} {what} per 24 h: {used:g} used, {requested:g} asked")
        self.what, self.limit, self.used, self.requested, self.retry_after = what, limit, used, requested, retry_after


def _quota_window(owner: str, now: datetime,
                  other_than: str | None = None) -> tuple[ColumnElement[bool], ...]:
    """The owner's jobs a DailyQuota counts at `now`: those whose quota_at (their creation, or a
    staged job's latest page or start) is in the QUOTA_WINDOW before it (`other_than`: leave out
    this job)."""
    where = (col(Job.owner) == owner, col(Job.quota_at) > now - QUOTA_WINDOW)
    return (*where, col(Job.id) != other_than) if other_than is not None else where


def _quota_usage(conn: Connection, where: Sequence[ColumnElement[bool]]) -> tuple[int, float]:
    """Items and USD of the jobs `where` selects (_quota_window)."""
    items, cost = conn.execute(select(func.coalesce(func.sum(col(Job.n_items)), 0),
                                      func.coalesce(func.sum(col(Job.cost_usd)), 0.0)).where(*where)).one()
    return int(items), float(cost)


def cost_in_quota_window(engine: Engine, owner: str, now: datetime | None = None) -> float:
    """USD the owner's jobs of the last 24 h have cost so far: what the cost quota counts, at POST
    (_check_quota) and before each batch a worker judges."""
    with engine.connect() as conn:
        return _quota_usage(conn, _quota_window(owner, now or utcnow()))[1]


def _check_quota(conn: Connection, job: Job, quota: DailyQuota) -> None:
    """Raise QuotaExceeded when the new job's items, or any new job once the cost limit is spent,
    would take its owner over the quota, counting the owner's other jobs of the 24 h before it
    (_quota_window)."""
    _check_quota_of(conn, job.created_at, _quota_window(job.owner, job.created_at, other_than=job.id),
                    0, job.n_items, quota)


def check_staged_quota(conn: Connection, owner: str, job_id: str, job_items: int, new_items: int,
                       quota: DailyQuota) -> None:
    """_check_quota for a staged job that holds `job_items` so far, now (store.pages): with a page of
    `new_items` added, or at its start (`new_items` 0: a spent cost quota refuses it).
    QuotaExceeded's retry_after is None when the job with its pages can never fit."""
    now = utcnow()
    _check_quota_of(conn, now, _quota_window(owner, now, other_than=job_id), job_items, new_items, quota)


def _check_quota_of(conn: Connection, now: datetime, where: Sequence[ColumnElement[bool]],
                    already: int, new_items: int, quota: DailyQuota) -> None:
    """QuotaExceeded when `new_items` more, beside the jobs `where` selects and `already` items of
    the job itself, would pass the quota."""
    items, cost = _quota_usage(conn, where)
    items += already
    if quota.items is not None and items + new_items > quota.items:
        limit = quota.items
        if already + new_items > limit:
            raise QuotaExceeded("items", limit, items, new_items, None)
        wait = _seconds_until_fits(conn, where, now, col(Job.n_items),
                                   lambda left: left + already + new_items <= limit)
        raise QuotaExceeded("items", limit, items, new_items, wait)
    if quota.cost_usd is not None and cost >= quota.cost_usd:
        limit_usd = quota.cost_usd
        wait = _seconds_until_fits(conn, where, now, col(Job.cost_usd), lambda left: left < limit_usd)
        # Never None in exact arithmetic (no jobs: nothing spent); a rounding error waits a day.
        raise QuotaExceeded("USD", limit_usd, round(cost, 6), 0, wait or QUOTA_WINDOW.total_seconds())


def _seconds_until_fits(conn: Connection, where: Sequence[ColumnElement[bool]], now: datetime,
                        amount: SQLColumnExpression[float], fits: Callable[[float], bool]) -> float | None:
    """Seconds until enough of the oldest jobs in the window have left it for `fits(what is left)`,
    `amount` (a column of jobs) being what each takes with it."""
    jobs = conn.execute(select(col(Job.quota_at), amount).where(*where).order_by(col(Job.quota_at))).all()
    left = sum(value for _, value in jobs)
    for counted_from, value in jobs:
        left -= value
        if fits(left) and counted_from is not None:  # never None here: the window's ">" leaves NULL out
            return max(1.0, (counted_from + QUOTA_WINDOW - now).total_seconds())
    return None


def create_job(bind: Bind, owner: str, items: Sequence[PairItem], profile: Judging,
               idempotency_key: str | None = None, batch_size: int = 32, kind: str = "pairwise",
               inputs: Mapping[str, Any] | None = None, quota: DailyQuota | None = None,
               max_cost_usd: float | None = None, webhook_url: str | None = None,
               staged: Staged | None = None) -> JobCreated:
    """Store a job and all its items in one transaction (all or nothing).

    `inputs`: what the job's report needs beyond its items (a JSON object, see `job_inputs`); stored
    in the same transaction, so a job never exists without them. With an `idempotency_key` the
    owner used before, nothing is stored: the earlier job comes back, `same_request` telling
    whether it was made from this very request (`request_fingerprint`). `quota`: the owner's daily quota,
    checked in the same transaction after the job row is written (QuotaExceeded rolls it back). The
    write holds SQLite's one write lock, and on PostgreSQL an advisory lock per owner serializes its
    creations, so concurrent requests of one key cannot both pass on the same remaining quota. A
    replay of an Idempotency-Key returns the existing job without a quota check. `max_cost_usd`:
    the job's budget (store.budget), part of the request's fingerprint. `webhook_url`: where the
    job's end is posted (store.webhooks: its event is stored with the job), part of it too.
    `staged`: a job created without items, filled in pages (store.pages).
    """
    fingerprint = fingerprint_of_request(kind, items, profile, staged.inputs() if staged else inputs, max_cost_usd,
                                         webhook_url)
    if idempotency_key:
        existing = find_job_by_idempotency_key(bind, owner, idempotency_key)
        if existing is not None:
            return _replayed(bind, existing, fingerprint)
    plan = summaries.plan_group_keys(items)
    info = judge_info(profile)
    status, open_for_items, plan_state = "queued", False, None
    if staged is not None:  # plan: none while it runs early (every key overflows), else fixed at start
        status, open_for_items, plan_state = ("queued" if staged.start_early else "open"), True, (
            None if staged.start_early else "{}")
    created_at = utcnow()
    job = Job(
        id=str(uuid.uuid4()), owner=owner, created_at=created_at, quota_at=created_at, kind=kind, idempotency_key=idempotency_key,
        profile_name=info.profile, provider=info.provider, model=info.model,
        profile_json=(profile.model_dump_json() if isinstance(profile, JudgeProfile)
                      else json.dumps(stored_judging(profile), ensure_ascii=False)), batch_size=batch_size, n_items=len(items),
        summary_keys=json.dumps(plan, ensure_ascii=False), request_fingerprint=fingerprint,
        max_cost_usd=max_cost_usd, status=status, open_for_items=open_for_items, plan_state=plan_state,
    )
    try:
        with writing(bind) as conn:
            if idempotency_key or (quota is not None and quota.limited) or (staged is not None and staged.max_open is not None):
                lock_quota(conn, owner)
            if idempotency_key:  # the key of a page (POST /v1/jobs/{id}/items) is another route's
                paged = _job_with_page_key(conn, owner, idempotency_key)
                if paged is not None:
                    raise _KeyOfAPage(paged)
            if staged is not None and staged.max_open is not None:
                _check_open_jobs(conn, owner, staged.max_open)
            conn.execute(insert(Job).values(**job.model_dump()))
            if quota is not None and quota.limited:
                _check_quota(conn, job, quota)
            summaries.record_overflow(conn, job.id, [key for key, kept in plan.items()
                                                     if not kept and summaries.overflow_key(key)])
            rows = [
                {"job_id": job.id, "item_id": item.id, "position": position,
                 "item_json": item.model_dump_json(exclude_none=True)}
                for position, item in enumerate(items)
            ]
            insert_many(conn, table_of(JobItem), rows)
            if inputs is not None:
                conn.execute(insert(JobInput).values(
                    job_id=job.id, inputs_json=json.dumps(inputs, ensure_ascii=False, separators=(",", ":")),
                    created_at=utcnow()))
            if webhook_url is not None:
                webhooks.add_event(conn, job.id, owner, webhook_url, job.created_at)
    except _KeyOfAPage as taken:
        return JobCreated(taken.job, created=False, same_request=False)
    except IntegrityError:
        # A concurrent POST with the same Idempotency-Key won the race.
        if idempotency_key:
            existing = find_job_by_idempotency_key(bind, owner, idempotency_key)
            if existing is not None:
                return _replayed(bind, existing, fingerprint)
        raise
    return JobCreated(job, created=True)


def _check_open_jobs(conn: Connection, owner: str, limit: int) -> None:
    """TooManyOpenJobs when `owner` already holds `limit` jobs open to pages (under lock_quota)."""
    open_jobs = conn.execute(select(func.count()).select_from(Job).where(
        col(Job.owner) == owner, col(Job.open_for_items).is_(True))).scalar_one()
    if open_jobs >= limit:
        raise TooManyOpenJobs(limit)


def lock_quota(conn: Connection, owner: str) -> None:
    """Serialize, until `conn`'s transaction ends, the writes that check `owner`'s daily quota or
    open staged jobs (new jobs, pages and starts of staged jobs): an advisory lock per owner on
    PostgreSQL; SQLite has one writer."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _owner_lock_key(owner)})


def _owner_lock_key(owner: str) -> int:
    """A signed 64-bit advisory lock key of an owner (pg_advisory_xact_lock)."""
    return int.from_bytes(hashlib.sha256(b"pjudge-quota:" + owner.encode()).digest()[:8], "big", signed=True)


def job_inputs(bind: Bind, job_id: str) -> dict[str, Any] | None:
    """The `inputs` stored with the job by create_job; None when it was created without."""
    with reading(bind) as conn:
        row = conn.execute(select(col(JobInput.inputs_json)).where(col(JobInput.job_id) == job_id)).first()
    return json.loads(row[0]) if row else None


def find_job_by_idempotency_key(bind: Bind, owner: str, key: str) -> Job | None:
    with reading(bind) as conn:
        row = conn.execute(select(Job).where(col(Job.owner) == owner, col(Job.idempotency_key) == key)
                           ).mappings().first()
    return Job.model_validate(dict(row)) if row else None


class _KeyOfAPage(Exception):
    def __init__(self, job: Job):
        self.job = job


def _job_with_page_key(conn: Connection, owner: str, key: str) -> Job | None:
    """One of `owner`'s jobs that took a page under Idempotency-Key `key`, if any."""
    row = conn.execute(select(Job).join(JobPage, col(JobPage.job_id) == col(Job.id))
                       .where(col(Job.owner) == owner, col(JobPage.page_key) == key).limit(1)).mappings().first()
    return Job.model_validate(dict(row)) if row else None



def get_job(bind: Bind, job_id: str, owner: str | None = None) -> Job | None:
    query = select(Job).where(col(Job.id) == job_id)
    if owner is not None:
        query = query.where(col(Job.owner) == owner)
    with reading(bind) as conn:
        row = conn.execute(query).mappings().first()
    return Job.model_validate(dict(row)) if row else None


def job_profile(job: Job) -> Judging:
    """The job's judge profile, or its cascade (SPEC 2.1) with every stage's profile whole."""
    return judging_from_stored(job.profile_json)


def batches(job: Job) -> list[tuple[int, int]]:
    """[start, end) position ranges of the job's tasks."""
    return [(start, min(start + job.batch_size, job.n_items)) for start in range(0, job.n_items, job.batch_size)]


def job_items(bind: Bind, job_id: str, start: int, end: int) -> list[tuple[int, PairItem]]:
    with reading(bind) as conn:
        rows = conn.execute(
            select(col(JobItem.position), col(JobItem.item_json))
            .where(col(JobItem.job_id) == job_id, col(JobItem.position) >= start, col(JobItem.position) < end)
            .order_by(col(JobItem.position))
        ).all()
    return [(position, PairItem.model_validate_json(item_json)) for position, item_json in rows]


def pending_items(bind: Bind, job_id: str, start: int, end: int) -> list[tuple[int, PairItem]]:
    """The items in [start, end) that have no verdict yet, in position order: one query (a task's
    reads cost a round trip each on PostgreSQL)."""
    with reading(bind) as conn:
        rows = conn.execute(
            select(col(JobItem.position), col(JobItem.item_json))
            .outerjoin(VerdictRow, and_(col(VerdictRow.job_id) == col(JobItem.job_id),
                                        col(VerdictRow.position) == col(JobItem.position)))
            .where(col(JobItem.job_id) == job_id, col(JobItem.position) >= start, col(JobItem.position) < end,
                   col(VerdictRow.id).is_(None))
            .order_by(col(JobItem.position))
        ).all()
    return [(position, PairItem.model_validate_json(item_json)) for position, item_json in rows]


def done_positions(bind: Bind, job_id: str, start: int, end: int) -> set[int]:
    with reading(bind) as conn:
        rows = conn.execute(
            select(col(VerdictRow.position)).where(
                col(VerdictRow.job_id) == job_id, col(VerdictRow.position) >= start,
                col(VerdictRow.position) < end)
        ).all()
    return {r[0] for r in rows}


def mark_running(bind: Bind, job_id: str) -> None:
    with writing(bind) as conn:
        conn.execute(
            update(Job).where(col(Job.id) == job_id, col(Job.status) == "queued")
            .values(status="running", started_at=utcnow(), updated_at=utcnow())
        )


def cancel_job(bind: Bind, job_id: str) -> bool:
    with writing(bind) as conn:
        result = conn.execute(
            update(Job).where(col(Job.id) == job_id, col(Job.status).in_((*ACTIVE, "open")))
            .values(status="cancelled", finished_at=utcnow(), updated_at=utcnow(), open_for_items=False)
        )
    return bool(result.rowcount)


def job_status(bind: Bind, job_id: str) -> str | None:
    with reading(bind) as conn:
        row = conn.execute(select(col(Job.status)).where(col(Job.id) == job_id)).first()
    return row[0] if row else None


def job_statuses(bind: Bind, job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: status} of the given jobs in one query (a missing job is absent): what a worker
    polls every second for the jobs it is running, to stop a cancelled job's calls."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    with reading(bind) as conn:
        rows = conn.execute(select(col(Job.id), col(Job.status)).where(col(Job.id).in_(ids))).all()
    return {job_id: status for job_id, status in rows}


@dataclass(frozen=True)
class VerdictBatch:
    """A batch of verdicts as rows, ready to store (`prepare_verdicts`): the verdict rows with their
    stat columns and groups, the summary contributions of all of them, the overflow keys."""

    job_id: str
    verdicts: tuple[tuple[int, Verdict], ...]
    rows: tuple[dict[str, Any], ...]
    delta: summaries.Delta
    overflow: Mapping[str, list[str]]
    now: datetime


def prepare_verdicts(bind: Bind, job_id: str, verdicts: Iterable[tuple[int, Verdict]],
                     now: datetime | None = None) -> VerdictBatch:
    """The rows of verdicts and their summed summary contributions, computed before the write
    transaction (less time holding locks). `now`: their created_at (default: the current time)."""
    batch = tuple(verdicts)
    now = now or utcnow()
    plan = None
    if batch:
        with reading(bind) as conn:
            plan = summaries.job_plan(conn, job_id)
    rows = []
    overflow: dict[str, list[str]] = {}
    for (position, verdict), stats in zip(batch, summaries.stat_columns([v for _, v in batch]), strict=True):
        groups, overflow[verdict.id] = summaries.verdict_groups(verdict.metadata, plan)
        rows.append({**verdict_row(job_id, position, verdict, now), **stats,
                     "group_json": json.dumps(groups, ensure_ascii=False)})
    return VerdictBatch(job_id, batch, tuple(rows), summaries.delta_of(rows), overflow, now)


def store_verdicts(conn: Connection, prepared: VerdictBatch) -> int:
    """`store_new_verdicts`; returns how many were new."""
    return len(store_new_verdicts(conn, prepared))


def store_new_verdicts(conn: Connection, prepared: VerdictBatch) -> list[Verdict]:
    """Store a prepared batch exactly once in `conn`'s transaction; returns the verdicts that were
    new (what judge.metrics counts once the transaction committed).

    The verdicts go in with one INSERT ... ON CONFLICT DO NOTHING RETURNING: only the rows that
    were really new come back, and only their calls, counts and summary contributions are written,
    so a redelivered task adds nothing and the job's counters and summaries stay exact. The same
    transaction marks the job done when these were its last verdicts. The caller commits: the
    worker writes its new cache entries in the same transaction, one write per batch.
    """
    job_id, rows, now, delta = prepared.job_id, list(prepared.rows), prepared.now, prepared.delta
    if not rows:
        return []
    # First the rows no other writer touches: the verdicts, their calls.
    new_ids = set(insert_many(conn, table_of(VerdictRow), rows, ignore_conflicts=True, returning="item_id"))
    if not new_ids:
        return []  # every verdict was stored by an earlier delivery of this task
    new_rows = [row for row in rows if row["item_id"] in new_ids]
    if len(new_rows) < len(rows):
        delta = summaries.delta_of(new_rows)
    new = [verdict for _, verdict in prepared.verdicts if verdict.id in new_ids]
    call_rows = [call_row(job_id, verdict.id, call, now) for verdict in new for call in verdict.calls]
    insert_many(conn, table_of(CallRow), call_rows)
    # Then the rows every writer of this job shares, the job row first: attach_labels takes it
    # first too, so the summary rows are always locked under it (no deadlock), and a relabel
    # never interleaves with these verdicts' contributions. Concurrent batches of a job queue
    # on that lock until commit, so on PostgreSQL its statements go in one round trip (then the
    # rare overflow keys and the commit).
    counts = {"job_id": job_id, "now": now, "verdicts": len(new_rows),
              "calls": sum(r["n_calls"] for r in new_rows),
              "failed_calls": sum(r["n_failed_calls"] for r in new_rows),
              "failed_items": sum(r["winner"] is None for r in new_rows),
              "cost": sum(r["cost_usd"] for r in new_rows)}
    if conn.dialect.name == "postgresql":
        with one_round_trip(conn) as driver:
            driver.execute(_postgres_statement(conn, _ADD_TO_JOB), counts)
            delta.apply(conn, driver)
    else:
        conn.execute(_ADD_TO_JOB, counts)
        delta.apply(conn)
    summaries.record_overflow(conn, job_id, [key for row in new_rows for key in prepared.overflow[row["item_id"]]])
    return new


def record_verdicts(bind: Bind, job_id: str, verdicts: Iterable[tuple[int, Verdict]],
                    now: datetime | None = None) -> int:
    """`prepare_verdicts` then `store_verdicts` in the bind's transaction (an Engine's own)."""
    prepared = prepare_verdicts(bind, job_id, verdicts, now)
    if not prepared.rows:
        return 0
    with writing(bind) as conn:
        return store_verdicts(conn, prepared)


# A batch's counts, and the job's completion when these were its last verdicts: one statement,
# whose SET expressions all see the row as it was (so the last of concurrent writers, which waits
# for the others' row lock, always sees every verdict; completion needs no coordinator).
_COMPLETE = (f"status IN ({', '.join(repr(status) for status in ACTIVE)}) AND n_verdicts + :verdicts >= n_items"
             " AND NOT open_for_items")
_ADD_TO_JOB = text(
    "UPDATE jobs SET n_verdicts = n_verdicts + :verdicts, n_calls = n_calls + :calls,"
    " n_failed_calls = n_failed_calls + :failed_calls, n_failed_items = n_failed_items + :failed_items,"
    " cost_usd = cost_usd + :cost, updated_at = :now,"
    f" status = CASE WHEN {_COMPLETE} THEN 'done' ELSE status END,"
    f" finished_at = CASE WHEN {_COMPLETE} THEN :now ELSE finished_at END"
    " WHERE id = :job_id"
).bindparams(bindparam("now", type_=table_of(Job).c.updated_at.type))
_compiled: dict[tuple[str, int], str] = {}


def _postgres_statement(conn: Connection, statement: ClauseElement) -> str:
    """`statement` as psycopg's own SQL text (%(name)s parameters), compiled once."""
    key = (conn.dialect.name, id(statement))
    if key not in _compiled:
        _compiled[key] = str(statement.compile(dialect=conn.dialect))
    return _compiled[key]


def finish_if_complete(bind: Bind, job_id: str) -> bool:
    """Mark the job done when every item has a verdict. record_verdicts does this in its own
    transaction, where the counter update has the job row: the last of concurrent writers always
    sees every verdict, so completion needs no coordinator. Tasks that store nothing call this."""
    with writing(bind) as conn:
        return _finish_if_complete(conn, job_id)


def _finish_if_complete(conn: Connection, job_id: str) -> bool:
    result = conn.execute(
        update(Job).where(col(Job.id) == job_id, col(Job.status).in_(ACTIVE),
                          col(Job.n_verdicts) >= col(Job.n_items), col(Job.open_for_items).is_(False))
        .values(status="done", finished_at=utcnow(), updated_at=utcnow())
    )
    return bool(result.rowcount)


def list_verdicts(bind: Bind, job_id: str, after_position: int = -1, limit: int = 100,
                  with_calls: bool = True, with_raw: bool = True) -> list[tuple[int, Verdict]]:
    """Verdicts in item order after a cursor position (keyset pagination)."""
    after_position = min(after_position, MAX_POSITION)  # no position is larger
    with reading(bind) as conn:
        rows = conn.execute(
            select(VerdictRow)
            .where(col(VerdictRow.job_id) == job_id, col(VerdictRow.position) > after_position)
            .order_by(col(VerdictRow.position)).limit(limit)
        ).all()
        calls: dict[str, list[Call]] = {}
        if rows and with_calls:
            ids = [r.item_id for r in rows]
            call_rows = conn.execute(
                select(*call_columns(with_raw))
                .where(col(CallRow.job_id) == job_id, col(CallRow.item_id).in_(ids))
                .order_by(col(CallRow.item_id), col(CallRow.stage), col(CallRow.order), col(CallRow.sample))
            ).all()
            for call_row in call_rows:
                calls.setdefault(call_row.item_id, []).append(call_from_row(call_row))
    return [(r.position, verdict_from_row(r, calls.get(r.item_id, []))) for r in rows]


def count_verdicts(bind: Bind, job_id: str) -> int:
    with reading(bind) as conn:
        return int(conn.execute(select(func.count()).select_from(VerdictRow)
                                .where(col(VerdictRow.job_id) == job_id)).scalar_one())


def all_verdicts(bind: Bind, job_id: str, with_calls: bool = True, with_raw: bool = True) -> list[Verdict]:
    """Every verdict of a job; statistics pass with_raw=False (their calls' raw is None)."""
    result: list[Verdict] = []
    cursor = -1
    while True:
        page = list_verdicts(bind, job_id, cursor, 2000, with_calls, with_raw)
        if not page:
            return result
        result.extend(v for _, v in page)
        cursor = page[-1][0]


def attach_labels(bind: Bind, job_id: str, labels: Sequence[tuple[str, str | None]]) -> tuple[int, list[str]]:
    """Set human labels by item id; returns (updated, unknown ids). Nothing changes if any id is unknown.

    The job's summaries move with the labels in the same transaction: each changed verdict's old
    contribution is subtracted and its new one added.
    """
    ids = [item_id for item_id, _ in labels]
    with writing(bind) as conn:
        known: set[str] = set()
        for some in in_slices(ids):
            known.update(conn.execute(select(col(JobItem.item_id)).where(
                col(JobItem.job_id) == job_id, col(JobItem.item_id).in_(some))).scalars())
        unknown = [i for i in ids if i not in known]
        if unknown:
            return 0, unknown
        # Lock the job row first (see record_verdicts): the verdict rows read below then cannot
        # change, or gain a newly committed sibling, before this transaction ends. On SQLite this
        # write also starts the transaction, which a read alone would not.
        conn.execute(update(Job).where(col(Job.id) == job_id).values(updated_at=utcnow()))
        by_id = dict(labels)
        before: list[RowMapping] = []
        for some in in_slices(ids):
            before += conn.execute(select(*summaries.RELABEL_COLUMNS).where(
                col(VerdictRow.job_id) == job_id, col(VerdictRow.item_id).in_(some))).mappings().all()
        updated = 0
        for row in before:
            result = conn.execute(update(VerdictRow).where(col(VerdictRow.id) == row["id"])
                                  .values(human_label=by_id[row["item_id"]]))
            updated += result.rowcount or 0
        for item_id, label in labels:
            item = conn.execute(select(col(JobItem.id), col(JobItem.item_json)).where(
                col(JobItem.job_id) == job_id, col(JobItem.item_id) == item_id)).first()
            if item is not None:
                data = json.loads(item.item_json)
                data["human_label"] = label
                conn.execute(update(JobItem).where(col(JobItem.id) == item.id)
                             .values(item_json=json.dumps(data)))
        summaries.relabel(conn, before, by_id)
    return updated, []


def active_jobs(bind: Bind) -> list[Job]:
    with reading(bind) as conn:
        rows = conn.execute(select(Job).where(col(Job.status).in_(ACTIVE))).mappings().all()
    return [Job.model_validate(dict(r)) for r in rows]


def job_counts(bind: Bind) -> dict[str, int]:
    with reading(bind) as conn:
        rows = conn.execute(select(col(Job.status), func.count()).group_by(col(Job.status))).all()
    return {status: count for status, count in rows}


def touch_job(bind: Bind, job_id: str) -> None:
    with writing(bind) as conn:
        conn.execute(update(Job).where(col(Job.id) == job_id).values(updated_at=utcnow()))


# ---------------------------------------------------------------- the call cache

class DbCallCache:
    """The call cache in the service database, shared by every worker."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._insert = insert_ignore(engine, CacheEntry)

    def get(self, key: str) -> CallResult | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(col(CacheEntry.raw), col(CacheEntry.input_tokens), col(CacheEntry.output_tokens))
                .where(col(CacheEntry.key) == key)).first()
        return CallResult(text=row[0], input_tokens=row[1], output_tokens=row[2]) if row else None

    def put(self, key: str, result: CallResult) -> None:
        with writing(self.engine) as conn:
            conn.execute(self._insert.values(key=key, raw=result.text, input_tokens=result.input_tokens,
                                             output_tokens=result.output_tokens, created_at=utcnow()))
