"""The human queue of a job (GET /v1/jobs/{id}/queue, issue 14) and the verdict columns of its
per-stage report, read without the calls.

An item waits for a human label when its verdict abstained (escalated by a cascade, or under a
single profile's certainty threshold) and it has no human label, except a cascade's escalated
items when the cascade's `then` is "abstain" (calibration.stages.awaits_label is the same rule in
Python). The queue is ordered as the HITL selection orders items (SPEC 3.3,
calibration.stages.queue_key): a null BPDE (no call parsed) first, then the highest BPDE, ties by
input position. A label posted to the job takes the item out of the queue.

Both reads use the partial index ix_verdicts_waiting (migration 0009) on (job_id, bpde DESC,
position) over the waiting rows only, so a page or the count costs the waiting items of the job,
not its verdicts. SQLite sorts NULL below every number and PostgreSQL above, so the null-BPDE
items are read by their own query rather than by ORDER BY.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select

from judge.profiles import is_cascade
from judge.records import JudgeInfo, StageVerdict, Verdict
from store.db import Bind, reading
from store.models import MAX_POSITION, WAITING, JobItem, VerdictRow, table_of

Then = Literal["human", "abstain"]
VERDICT = table_of(VerdictRow).c
ITEM = table_of(JobItem).c


def cascade_then(profile_json: str) -> Then | None:
    """A job's `then` from its stored profile: "human" or "abstain" for a cascade (SPEC 2.1),
    None for a single judge profile."""
    data = json.loads(profile_json)
    if not is_cascade(data):
        return None
    return "abstain" if data.get("then") == "abstain" else "human"


def waiting_condition(then: Then | None) -> list[ColumnElement[bool]]:
    """The WHERE terms of the waiting verdicts of a job whose cascade ends in `then`."""
    where: list[ColumnElement[bool]] = [WAITING]
    if then == "abstain":  # escalated (stages, no accepting stage) items are not queued
        where.append(or_(VERDICT.stages_json.is_(None), VERDICT.stage.is_not(None)))
    return where


def count_waiting(bind: Bind, job_id: str, then: Then | None) -> int:
    with reading(bind) as conn:
        return int(conn.execute(select(func.count()).select_from(table_of(VerdictRow))
                                .where(VERDICT.job_id == job_id, *waiting_condition(then))).scalar_one())


@dataclass(frozen=True)
class Waiting:
    """One queue entry: the item as posted (without its label) and its verdict's summary."""

    position: int
    item: dict[str, Any]
    verdict: dict[str, Any]


class UnknownCursor(ValueError):
    """The cursor names no verdict of the job."""


_ENTRY_COLUMNS = (VERDICT.position, VERDICT.winner, VERDICT.p_a, VERDICT.certainty, VERDICT.bpde,
                  VERDICT.abstained, VERDICT.stage, VERDICT.stages_json, ITEM.item_json)


def _entry(row: Any) -> Waiting:
    item = json.loads(row.item_json)
    item.pop("human_label", None)
    stages = None if row.stages_json is None else json.loads(row.stages_json)
    verdict = {"winner": row.winner, "p_a": row.p_a, "certainty": row.certainty, "bpde": row.bpde,
               "abstained": row.abstained, "stage": row.stage, "stages": stages}
    return Waiting(row.position, item, verdict)


def waiting_page(bind: Bind, job_id: str, then: Then | None, after: int | None, limit: int) -> list[Waiting]:
    """Up to `limit` waiting items after the entry at position `after` (None: from the start), in
    queue order. The cursor is a position: its verdict's BPDE never changes, so the next page
    starts right after it even when it (or others) left the queue meanwhile."""
    if after is not None and after > MAX_POSITION:
        raise UnknownCursor(after)
    with reading(bind) as conn:
        null_after: int | None = -1  # the null-BPDE part: positions after this (None: part done)
        bound: tuple[float, int] | None = None  # the numbered part: after this (bpde, position)
        if after is not None:
            found = conn.execute(select(VERDICT.bpde)
                                 .where(VERDICT.job_id == job_id, VERDICT.position == after)).first()
            if found is None:
                raise UnknownCursor(after)
            if found.bpde is None:
                null_after = after
            else:
                null_after, bound = None, (found.bpde, after)
        base = (select(*_ENTRY_COLUMNS)
                .join(table_of(JobItem), and_(ITEM.job_id == VERDICT.job_id, ITEM.position == VERDICT.position))
                .where(VERDICT.job_id == job_id, *waiting_condition(then)))
        rows: list[Any] = []
        if null_after is not None:
            rows += conn.execute(base.where(VERDICT.bpde.is_(None), VERDICT.position > null_after)
                                 .order_by(VERDICT.position).limit(limit)).all()
        if len(rows) < limit:
            numbered = base.where(VERDICT.bpde.is_not(None))
            if bound is not None:
                bpde, position = bound
                # bpde <= the cursor's is implied by the OR; said alone it lets PostgreSQL start the
                # index scan at the cursor instead of filtering the entries before it.
                numbered = numbered.where(VERDICT.bpde <= bpde, or_(
                    VERDICT.bpde < bpde, and_(VERDICT.bpde == bpde, VERDICT.position > position)))
            rows += conn.execute(numbered.order_by(VERDICT.bpde.desc(), VERDICT.position)
                                 .limit(limit - len(rows))).all()
    return [_entry(row) for row in rows]


_STAGE_COLUMNS = (VERDICT.position, VERDICT.item_id, VERDICT.winner, VERDICT.p_a, VERDICT.certainty,
                  VERDICT.abstained, VERDICT.bpde, VERDICT.human_label, VERDICT.stage, VERDICT.stages_json,
                  VERDICT.profile, VERDICT.provider, VERDICT.model)


def stage_verdicts(bind: Bind, job_id: str, page: int = 2000) -> Iterator[Verdict]:
    """The job's verdicts in input order with what calibration.stages.stage_report reads (no calls,
    no metadata), a page of rows at a time."""
    after = -1
    while True:
        with reading(bind) as conn:
            rows = conn.execute(select(*_STAGE_COLUMNS).where(VERDICT.job_id == job_id, VERDICT.position > after)
                                .order_by(VERDICT.position).limit(page)).all()
        for row in rows:
            yield Verdict(
                id=row.item_id, winner=row.winner, p_a=row.p_a, certainty=row.certainty, consistent=None,
                abstained=row.abstained, bpde=row.bpde, human_label=row.human_label,
                judge=JudgeInfo(profile=row.profile, provider=row.provider, model=row.model), stage=row.stage,
                stages=None if row.stages_json is None
                else [StageVerdict.model_validate(s) for s in json.loads(row.stages_json)])
        if len(rows) < page:
            return
        after = rows[-1].position
