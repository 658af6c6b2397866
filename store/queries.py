"""Read queries of the API's views beyond store.repo (nothing here writes): health, totals, the
verdicts of /v1/stats/agreement's fallback. Each takes a bind (store.db.Bind). The training
export's reads are store.exports.

`agreement_verdicts` loads the verdicts of /v1/stats/agreement for the one case the SQL summaries
(store.stats) cannot answer: by_group over a metadata key that is not summarized for some job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select, text
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from judge.records import Call, Verdict
from store.db import Bind, reading
from store.models import CallRow, Job, VerdictRow
from store.rows import call_columns, call_from_row, verdict_from_row


def ping(bind: Bind) -> bool:
    try:
        with reading(bind) as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False


def totals(bind: Bind) -> dict[str, float]:
    """Sums over all jobs of their counters (the per-job counters are exact, see repo.record_verdicts)."""
    with reading(bind) as conn:
        row = conn.execute(select(
            *(func.coalesce(func.sum(col(counter)), 0) for counter in (
                Job.n_items, Job.n_verdicts, Job.n_calls, Job.n_failed_calls, Job.n_failed_items)),
            func.coalesce(func.sum(col(Job.cost_usd)), 0.0),
        )).one()
    names = ("items", "verdicts", "calls", "failed_calls", "failed_items", "cost_usd")
    return dict(zip(names, row, strict=True))


# ---------------------------------------------------------------- stats over many jobs

@dataclass(frozen=True)
class VerdictFilter:
    owner: str
    profile: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [col(Job.owner) == self.owner]
        if self.profile is not None:
            conditions.append(col(VerdictRow.profile) == self.profile)
        if self.model is not None:
            conditions.append(col(VerdictRow.model) == self.model)
        if self.since is not None:
            conditions.append(col(VerdictRow.created_at) >= self.since)
        if self.until is not None:
            conditions.append(col(VerdictRow.created_at) < self.until)
        return conditions


def count_agreement_verdicts(bind: Bind, where: VerdictFilter) -> int:
    with reading(bind) as conn:
        return int(conn.execute(
            select(func.count()).select_from(VerdictRow).join(Job, col(Job.id) == col(VerdictRow.job_id))
            .where(*where.conditions())
        ).scalar_one())


def agreement_verdicts(bind: Bind, where: VerdictFilter) -> list[Verdict]:
    """Every verdict (with its calls, without their raw answers: statistics never read them) of the
    owner's jobs matching the filter, oldest job first."""
    with reading(bind) as conn:
        rows = conn.execute(
            select(VerdictRow).join(Job, col(Job.id) == col(VerdictRow.job_id)).where(*where.conditions())
            .order_by(col(Job.created_at), col(VerdictRow.job_id), col(VerdictRow.position))
        ).all()
        calls: dict[tuple[str, str], list[Call]] = {}
        call_rows = conn.execute(
            select(*call_columns(with_raw=False))
            .join(VerdictRow, and_(col(VerdictRow.job_id) == col(CallRow.job_id),
                                   col(VerdictRow.item_id) == col(CallRow.item_id)))
            .join(Job, col(Job.id) == col(VerdictRow.job_id)).where(*where.conditions())
            .order_by(col(CallRow.job_id), col(CallRow.item_id), col(CallRow.stage), col(CallRow.order), col(CallRow.sample))
        ).all()
        for call_row in call_rows:
            calls.setdefault((call_row.job_id, call_row.item_id), []).append(call_from_row(call_row))
    return [verdict_from_row(r, calls.get((r.job_id, r.item_id), [])) for r in rows]

