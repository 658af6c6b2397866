"""The data steps of the migrations: summaries, plans and stat columns for the verdicts stored
before a migration (0003/0004, 0007), request fingerprints of the keyed jobs stored before them (0007). Kept out of the write path (store.summaries, store.repo),
which these functions only call; each runs the current code on the rows as they are."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import bindparam, delete, inspect, select, update
from sqlalchemy.engine import Connection
from sqlmodel import col

from judge.records import Call, PairItem
from store.models import (
    CallRow,
    Job,
    JobItem,
    VerdictRow,
    summary_bpde,
    summary_bpde_chunk,
    summary_lambda,
    summary_main,
    summary_overflow,
    table_of,
)
from store.repo import fingerprint_of_stored_job
from store.rows import call_from_row, verdict_from_row
from store.summaries import (
    UNGROUPED,
    Delta,
    forget_plan,
    overflow_key,
    plan_group_keys,
    record_overflow,
    stat_columns,
    verdict_groups,
)

# ---------------------------------------------------------------- migration 0003

def backfill(conn: Connection, page: int = 2000) -> None:
    """Plans, stat columns and summaries for the jobs stored before the summaries existed (no
    plan yet: summary_keys is null); a job with a plan has been summarized as it went."""
    # The columns of `calls` and `verdicts` as they are at this migration: later migrations add others.
    present = {column["name"] for column in inspect(conn).get_columns("calls")}
    call_columns = [column for column in table_of(CallRow).columns if column.name in present]
    present = {column["name"] for column in inspect(conn).get_columns("verdicts")}
    verdict_columns = [column for column in table_of(VerdictRow).columns if column.name in present]
    unplanned = select(col(Job.id)).where(col(Job.summary_keys).is_(None)).order_by(col(Job.id))
    for job_id in conn.execute(unplanned).scalars().all():
        items = [PairItem.model_validate_json(text) for text in conn.execute(
            select(col(JobItem.item_json)).where(col(JobItem.job_id) == job_id)).scalars()]
        plan = plan_group_keys(items)
        conn.execute(update(Job).where(col(Job.id) == job_id).values(summary_keys=json.dumps(plan)))
        record_overflow(conn, job_id, [k for k, kept in plan.items() if not kept and overflow_key(k)])
        after = -1
        while True:
            rows = conn.execute(select(*verdict_columns)
                                .where(col(VerdictRow.job_id) == job_id, col(VerdictRow.position) > after)
                                .order_by(col(VerdictRow.position)).limit(page)).all()
            if not rows:
                break
            after = rows[-1].position
            calls: dict[str, list[Call]] = {}
            for call in conn.execute(select(*call_columns).where(
                    col(CallRow.job_id) == job_id, col(CallRow.item_id).in_([r.item_id for r in rows]))
                    .order_by(col(CallRow.item_id), col(CallRow.order), col(CallRow.sample))):
                calls.setdefault(call.item_id, []).append(call_from_row(call))
            verdicts = [verdict_from_row(r, calls.get(r.item_id, [])) for r in rows]
            overflow: list[str] = []
            updates = []
            stored: list[dict[str, Any]] = []
            groups: list[dict[str, str]] = []
            for row, verdict, stats in zip(rows, verdicts, stat_columns(verdicts), strict=True):
                named, extra = verdict_groups(verdict.metadata, plan)
                overflow += extra
                values = {**stats, "group_json": json.dumps(named, ensure_ascii=False)}
                updates.append({"row_id": row.id, **values})
                stored.append({**row._mapping, **values})
                groups.append(named)
            conn.execute(update(VerdictRow).where(col(VerdictRow.id) == bindparam("row_id")), updates)
            Delta.of(stored, groups).apply(conn)
            record_overflow(conn, job_id, overflow)



# ---------------------------------------------------------------- migration 0007

def rebuild_empty_key_jobs(conn: Connection) -> None:
    """Summaries made anew for the jobs whose plan summarized a metadata key "" (before it was
    refused): their "" rows were read as part of every total. Their rows are dropped and the job
    summarized again by `backfill`, which refuses the key now."""
    plans = conn.execute(select(col(Job.id), col(Job.summary_keys)).where(col(Job.summary_keys).is_not(None)))
    broken = [job_id for job_id, plan in plans if plan is not None and json.loads(plan).get(UNGROUPED[0])]
    for job_id in broken:
        for table in (summary_main, summary_lambda, summary_bpde, summary_bpde_chunk, summary_overflow):
            conn.execute(delete(table).where(table.c.job_id == job_id))
        conn.execute(update(Job).where(col(Job.id) == job_id).values(summary_keys=None))
        forget_plan(job_id)
    if broken:
        backfill(conn)


# ---------------------------------------------------------------- migration 0007

def fingerprint_keyed_jobs(conn: Connection) -> None:
    """request_fingerprint of the jobs with an Idempotency-Key stored before fingerprints were."""
    jobs = table_of(Job)
    keyed = conn.execute(select(jobs.c.id).where(jobs.c.idempotency_key.is_not(None))).scalars().all()
    for job_id in keyed:
        conn.execute(update(jobs).where(jobs.c.id == job_id)
                     .values(request_fingerprint=fingerprint_of_stored_job(conn, job_id)))
