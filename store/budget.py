"""Job budgets (`max_cost_usd`): no new calls once a job has cost that much.

Each batch of a job with a budget asks `admit` before it makes a call, with `usd`, the most its
calls may cost (judge.estimate: its items' prompts, max_tokens per call). In one transaction that
holds the job's row lock (taken first, as store.repo.store_verdicts takes it), `admit` reads what
the job has spent (jobs.cost_usd, summed as verdicts are stored) and what the other admitted
batches hold (budget_reservations), and
- EXHAUSTED when spent >= budget: the batch makes no calls; when no other batch holds a
  reservation the job ends `budget_exhausted` at once (else the last of them ends it, `settle`);
- WAIT when spent + held >= budget: batches running may yet leave room; the task hands its
  message back and asks again later;
- ADMITTED otherwise: the batch's reservation is stored (replacing its own earlier one, so a
  redelivered batch holds one, never two) and its calls run.
`settle`, after the batch's verdicts are stored, drops its reservation and ends the job
`budget_exhausted` when it has spent its budget, holds no reservation and lacks verdicts.

So a batch starts only while spent + held < budget, and the cost ends below budget + the cost of
one batch's calls as long as each batch costs no more than it reserved (re-asks, made only for
unreadable answers, and the input-token estimate can make it cost more). A reservation older
than RESERVATION_TTL (a worker killed mid-batch, whose message another worker redelivers under
the same key anyway) no longer counts.

The items never judged get no verdict: every report counts only what was judged, and the job
shows `budget_exhausted` with counts.verdicts below counts.items (an error verdict per item would
enter every accuracy as wrong).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from store.db import writing
from store.models import BudgetReservation, Job, utcnow

ADMITTED, WAIT, EXHAUSTED, INACTIVE = "admitted", "wait", "exhausted", "inactive"
BUDGET_EXHAUSTED = "budget_exhausted"
ACTIVE = ("queued", "running")  # store.repo.ACTIVE (not imported: repo imports nothing of this)
# Longer than a batch runs: PJUDGE_CALL_DEADLINE_S (300 s by default) per call, re-asks included.
RESERVATION_TTL = timedelta(minutes=30)
R = BudgetReservation


def _lock_job(conn: Connection, job_id: str, now: datetime) -> tuple[str, float, float | None, int, int] | None:
    """The job's row, locked for this transaction (an UPDATE: SQLite's write lock, PostgreSQL's row
    lock, in the order every writer of the job takes them)."""
    conn.execute(update(Job).where(col(Job.id) == job_id).values(updated_at=now))
    row = conn.execute(select(col(Job.status), col(Job.cost_usd), col(Job.max_cost_usd), col(Job.n_verdicts),
                              col(Job.n_items)).where(col(Job.id) == job_id)).first()
    return None if row is None else (row[0], float(row[1] or 0.0), row[2], int(row[3]), int(row[4]))


def _held(conn: Connection, job_id: str, now: datetime, other_than: int | None) -> tuple[int, float]:
    """(how many, USD) of the job's live reservations, leaving out batch `other_than`'s."""
    where: list[ColumnElement[bool]] = [col(R.job_id) == job_id, col(R.created_at) > now - RESERVATION_TTL]
    if other_than is not None:
        where.append(col(R.batch_start) != other_than)
    n, usd = conn.execute(select(func.count(), func.coalesce(func.sum(col(R.usd)), 0.0)).where(*where)).one()
    return int(n), float(usd)


def _release(conn: Connection, job_id: str, start: int) -> None:
    conn.execute(delete(BudgetReservation).where(col(R.job_id) == job_id, col(R.batch_start) == start))


def _exhaust(conn: Connection, job_id: str, now: datetime) -> None:
    conn.execute(update(Job).where(col(Job.id) == job_id, col(Job.status).in_(ACTIVE))
                 .values(status=BUDGET_EXHAUSTED, finished_at=now, updated_at=now))


def admit(bind: Engine | Connection, job_id: str, start: int, usd: float, now: datetime | None = None) -> str:
    """Whether batch `start` of the job may make calls costing up to `usd` (module docstring)."""
    now = now or utcnow()
    with writing(bind) as conn:
        job = _lock_job(conn, job_id, now)
        if job is None or job[0] not in ACTIVE:
            return INACTIVE
        _, spent, budget, _, _ = job
        if budget is None:
            return ADMITTED
        held_n, held_usd = _held(conn, job_id, now, other_than=start)
        if spent >= budget:
            _release(conn, job_id, start)
            if held_n == 0:
                _exhaust(conn, job_id, now)
            return EXHAUSTED
        if held_n and spent + held_usd >= budget:
            return WAIT
        _release(conn, job_id, start)
        conn.execute(insert(BudgetReservation).values(job_id=job_id, batch_start=start, usd=usd, created_at=now))
        return ADMITTED


def settle(bind: Engine | Connection, job_id: str, start: int, now: datetime | None = None) -> bool:
    """Drop batch `start`'s reservation (its verdicts are stored, or it stored none); end the job
    `budget_exhausted` when it is spent, nothing is held and items lack verdicts. True when it ended."""
    now = now or utcnow()
    with writing(bind) as conn:
        job = _lock_job(conn, job_id, now)
        _release(conn, job_id, start)
        if job is None:
            return False
        status, spent, budget, n_verdicts, n_items = job
        if status not in ACTIVE or budget is None or spent < budget or n_verdicts >= n_items:
            return False
        if _held(conn, job_id, now, other_than=None)[0]:
            return False
        _exhaust(conn, job_id, now)
        return True
