"""A job's preference pairs for the training export (judge.exports builds the rows): each kept
verdict's stored item and decision, in item order, read in keyset pages so that a job of any size
streams in constant memory (one page held at a time, each page its own short read)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from judge.exports import Decision, Selection
from store.db import Bind, reading
from store.models import JobItem, VerdictRow

PAGE = 500  # verdicts (with their items) read at a time


def _conditions(job_id: str, selection: Selection) -> list[ColumnElement[bool]]:
    """Selection.keeps in SQL, so skipped verdicts never leave the database (keeps is still applied
    to each row read: it stays the one definition)."""
    conditions: list[ColumnElement[bool]] = [
        col(VerdictRow.job_id) == job_id, col(VerdictRow.winner).in_(("A", "B")),
        col(VerdictRow.abstained).is_(False)]
    if selection.min_certainty is not None:
        conditions.append(col(VerdictRow.certainty) >= selection.min_certainty)
    if selection.consistent_only:
        conditions.append(col(VerdictRow.consistent).is_(True))
    return conditions


def preference_pairs(bind: Bind, job_id: str, selection: Selection, page: int | None = None,
                     ) -> Iterator[tuple[Mapping[str, Any], Decision]]:
    """(stored item, decision) of the job's verdicts that `selection` keeps, in item order, `page`
    (PAGE) at a time."""
    page = page or PAGE
    after = -1
    conditions = _conditions(job_id, selection)
    while True:
        with reading(bind) as conn:
            rows = conn.execute(
                select(col(VerdictRow.position), col(JobItem.item_json), col(VerdictRow.winner), col(VerdictRow.p_a),
                       col(VerdictRow.certainty), col(VerdictRow.consistent), col(VerdictRow.abstained),
                       col(VerdictRow.profile), col(VerdictRow.provider), col(VerdictRow.model))
                .join(JobItem, and_(col(JobItem.job_id) == col(VerdictRow.job_id),
                                    col(JobItem.item_id) == col(VerdictRow.item_id)))
                .where(*conditions, col(VerdictRow.position) > after)
                .order_by(col(VerdictRow.position)).limit(page)
            ).all()
        for position, item_json, *decision in rows:
            after = position
            kept = Decision(*decision)
            if selection.keeps(kept):
                yield json.loads(item_json), kept
        if len(rows) < page:
            return
