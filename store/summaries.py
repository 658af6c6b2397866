"""The write side of the verdict summaries: sufficient statistics of the SPEC 4 report per (job,
profile, model, hour, group), kept up to date in the transaction that changes the verdicts.

- record_verdicts adds the contributions of the verdicts it really inserted (`delta_of`);
- attach_labels subtracts a relabelled verdict's old contribution and adds its new one (`relabel`);
- the migrations build them for the jobs stored before they existed (`backfill`).

A batch's contributions are summed in Python first (the batch is small), then written with one
`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n` per table, rows in key order: every
writer of a job's rows holds the job's row lock first (see store.repo), so they never deadlock.

Groups: a verdict is summarized under a metadata key when the job's plan (fixed at creation,
`plan_group_keys`) says so and its group name is short enough; otherwise the (job, key) pair goes
to summary_overflow and by_group over that key falls back to the verdicts. A null value is the
"(missing)" group, which the reader gets as the total minus the other groups.

The ungrouped rows are those with group_key "" (UNGROUPED), so a metadata key "" is never
summarized under: its rows would be read as part of every total. Nor is a key or name holding NUL
(PostgreSQL text refuses it). Grouping by such a key reads the verdicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Table, bindparam, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from calibration.bias import LENGTH_MARGIN
from calibration.certainty import ece_bin
from calibration.from_counts import (
    CODES,
    ECE_FIELDS,
    FLOAT_FIELDS,
    INT_FIELDS,
    MAIN_FIELDS,
    bpde_key,
    certainty_bin,
    lambda_bin,
)
from calibration.report import group_key
from calibration.table import ABSENT, UNPARSED, build_table
from judge.records import PairItem, Verdict
from store.bulk import POSTGRES_MAX_PARAMETERS, placeholders
from store.models import (
    SUMMARY_KEY,
    CallRow,
    Job,
    JobItem,
    VerdictRow,
    summary_bpde,
    summary_bpde_chunk,
    summary_lambda,
    summary_main,
    summary_overflow,
)

SECONDS_PER_HOUR = 3600
# summary_main also keeps, per job and group, a row of all hours: queries without a time filter
# (most dashboard views, every job report) sum one row per job instead of one per hour.
ALL_HOURS = -1
CHUNK = 1024  # positions per HITL chunk: the finest order the summaries keep (store.stats)
UNGROUPED = ("", "")
# Limits on by-group summaries: how many keys per job, how many distinct values a key may take in
# a job (an id-like key would otherwise add rows per verdict), and name sizes that keep the
# primary keys within PostgreSQL's index entry limit.
MAX_GROUP_KEYS = 16
MAX_GROUP_VALUES = 64
MAX_KEY_BYTES = 128
MAX_VALUE_BYTES = 200
MAX_OVERFLOW_KEY = 255  # longer keys cannot be named by group_by (api.schemas.MAX_NAME)

Plan = dict[str, bool]
SummaryKey = tuple[str, str, str, int, str, str]  # in store.models.SUMMARY_KEY order


def hour_of(moment: datetime) -> int:
    """The summary bucket of a time: whole hours since 1970-01-01 UTC (naive times are UTC, as
    SQLite gives them back)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() // SECONDS_PER_HOUR)


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * SECONDS_PER_HOUR, UTC)


# ---------------------------------------------------------------- per verdict

def _value(x: Any) -> float | None:
    return None if not math.isfinite(x) else float(x)


def stat_columns(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The stat_* and calls_* columns of each verdict (see store.models.VerdictRow), computed by
    calibration.table.build_table itself so that they are the report's own numbers."""
    if not verdicts:
        return []
    t = build_table(verdicts)
    certainty, confidence = t.certainty, t.confidence
    has_certainty, has_confidence = np.isfinite(certainty), np.isfinite(confidence)
    cert_bins = certainty_bin(np.where(has_certainty, certainty, 0.0))
    lambda_bins = lambda_bin(np.where(has_confidence, confidence, 0.0))
    ece_bins = ece_bin(np.where(has_confidence, confidence, 0.5))
    both = (t.first_ab != ABSENT) & (t.first_ba != ABSENT)
    agree = both & (t.first_ab == t.first_ba) & (t.first_ab < UNPARSED)
    position = both.astype(np.int64) + agree
    known = np.isfinite(t.len_a) & np.isfinite(t.len_b)
    with np.errstate(invalid="ignore"):
        differ = known & (np.abs(t.len_a - t.len_b) > LENGTH_MARGIN)
        longer = np.where(differ, np.where(t.len_a > t.len_b, 1, 2), 0)
    return [
        {
            "stat_certainty": _value(certainty[i]),
            "stat_certainty_bin": int(cert_bins[i]) if has_certainty[i] else None,
            "stat_confidence": _value(confidence[i]),
            "stat_lambda_bin": int(lambda_bins[i]) if has_confidence[i] else None,
            "stat_ece_bin": int(ece_bins[i]) if has_confidence[i] else None,
            "stat_p_a": _value(t.p_a[i]),
            "stat_position": int(position[i]),
            "stat_longer": int(longer[i]),
            "calls_first": int(t.first_calls[i]),
            "calls_second": int(t.second_calls[i]),
            "calls_tie": int(t.tie_calls[i]),
        }
        for i in range(len(t))
    ]


def _fits(key: str, name: str) -> bool:
    """Whether a (key, group name) can be a summary row: a key other than the ungrouped rows' "",
    names short enough for the primary key and storable as text (PostgreSQL refuses NUL)."""
    return (key != UNGROUPED[0] and len(key.encode("utf-8")) <= MAX_KEY_BYTES
            and len(name.encode("utf-8")) <= MAX_VALUE_BYTES and "\x00" not in key and "\x00" not in name)


def overflow_key(key: str) -> bool:
    """Whether summary_overflow can name this key (group_by can: see `store.stats.report` for the others)."""
    return len(key) <= MAX_OVERFLOW_KEY and "\x00" not in key


def never_summarized(key: str) -> bool:
    """Keys no job is summarized under nor overflows: by_group over them reads the verdicts."""
    return key == UNGROUPED[0] or not overflow_key(key)


def plan_group_keys(items: Iterable[PairItem]) -> Plan:
    """{metadata key: summarized?} for a new job: at most MAX_GROUP_KEYS keys (in sorted order)
    whose values take at most MAX_GROUP_VALUES group names, each short enough."""
    names: dict[str, set[str]] = {}
    unfit: set[str] = set()
    for item in items:
        for key, value in item.metadata.items():
            if value is None or key in unfit:
                continue  # None is the "(missing)" group: never a row of its own
            seen = names.setdefault(key, set())
            name = group_key(value)
            if not _fits(key, name) or (name not in seen and len(seen) >= MAX_GROUP_VALUES):
                unfit.add(key)
                continue
            seen.add(name)
    kept = sorted(k for k in names if k not in unfit)[:MAX_GROUP_KEYS]
    return {key: key in kept for key in sorted(names)}


def verdict_groups(metadata: Mapping[str, Any], plan: Plan | None) -> tuple[dict[str, str], list[str]]:
    """(group names this verdict is summarized under, keys it should be but cannot)."""
    groups: dict[str, str] = {}
    overflow: list[str] = []
    for key, value in metadata.items():
        if value is None:
            continue
        summarized = plan.get(key) if plan is not None else None
        name = group_key(value) if summarized else ""
        if summarized and _fits(key, name):
            groups[key] = name
        elif summarized is not False and overflow_key(key):
            overflow.append(key)  # unknown to the plan, or too long: False keys are recorded already
    return groups, overflow


# ---------------------------------------------------------------- summing contributions

def outcome_fields(winner: str | None, label: str | None, n: int, pos_both: int, pos_agree: int,
                   calls_first: int, calls_second: int, calls_tie: int, a_longer: int, b_longer: int,
                   abstained: int, with_p_a: int, squares_a: float, squares_b: float) -> tuple[list[int], float]:
    """(MAIN_FIELDS counts, Brier sum) of n verdicts with this winner and label, from their sums:
    pos_both/pos_agree, calls by position, how many have A / B the longer response (by more than 30
    characters), are abstained, have a p_a, and the sums of (p_a - 1)^2 and p_a^2 over those.
    One verdict (n = 1) for the summaries, or a group of verdict rows summed by SQL."""
    w, lb = CODES[winner], CODES[label]
    labelled, has_winner = lb < 3, w < 2
    decided = labelled and has_winner
    differ = a_longer + b_longer
    winner_longer = a_longer if w == 0 else b_longer if w == 1 else 0
    label_longer = a_longer if lb == 0 else b_longer if lb == 1 else 0
    kept = n - abstained if decided else 0
    confusion = [0] * 16
    confusion[w * 4 + lb] = n
    return [
        n, *confusion, with_p_a if lb < 2 else 0, pos_both, pos_agree, calls_first, calls_second, calls_tie,
        differ if has_winner else 0, winner_longer, differ if decided else 0, winner_longer if labelled else 0,
        differ if lb < 2 else 0, label_longer, abstained, kept, kept if w == lb else 0,
    ], (squares_a if lb == 0 else squares_b if lb == 1 else 0.0)


_ECE_START = len(MAIN_FIELDS)
_CERTAINTY_START = _ECE_START + len(ECE_FIELDS)


class Delta:
    """Contributions of some verdicts to the summary tables, summed by summary row."""

    def __init__(self) -> None:
        self.main: dict[SummaryKey, list[np.ndarray]] = {}
        self.lambdas: dict[tuple[Any, ...], np.ndarray] = {}
        self.bpde: dict[tuple[Any, ...], np.ndarray] = {}
        self.chunks: dict[tuple[Any, ...], np.ndarray] = {}

    def add(self, row: Mapping[str, Any], groups: Mapping[str, str], sign: int = 1) -> None:
        """Add (sign 1) or remove (sign -1) one verdict row (a dict or DB row of VerdictRow's
        columns), exactly as calibration.table and its statistics classify it."""
        w, label = CODES[row["winner"]], CODES[row["human_label"]]
        labelled, has_winner = label < 3, w < 2
        decided = labelled and has_winner
        correct = labelled and w == label
        p_a = row["stat_p_a"]
        position, longer = row["stat_position"] or 0, row["stat_longer"] or 0
        ints = np.zeros(len(INT_FIELDS), dtype=np.int64)
        floats = np.zeros(len(FLOAT_FIELDS))
        ints[:len(MAIN_FIELDS)], floats[0] = outcome_fields(
            row["winner"], row["human_label"], 1, position >= 1, position == 2, row["calls_first"] or 0,
            row["calls_second"] or 0, row["calls_tie"] or 0, longer == 1, longer == 2, bool(row["abstained"]),
            p_a is not None, 0.0 if p_a is None else (p_a - 1.0) ** 2, 0.0 if p_a is None else p_a ** 2)
        cert_bin, lam_bin = row["stat_certainty_bin"], row["stat_lambda_bin"]
        if has_winner and cert_bin is not None:  # cumulative: every k <= its bin
            ints[_CERTAINTY_START:].reshape(-1, 3)[:cert_bin + 2] = (1, labelled, correct)
        in_confidence = decided and lam_bin is not None
        if in_confidence:
            ece = row["stat_ece_bin"]
            ints[_ECE_START + 2 * ece:_ECE_START + 2 * ece + 2] = (1, correct)
            floats[1 + ece] = row["stat_confidence"]
        ints *= sign
        floats *= sign
        cell = w * 3 + label
        hitl = (*bpde_key(row["bpde"]), row["position"] // CHUNK) if labelled else None

        base = (row["job_id"], hour_of(row["created_at"]), row["profile"], row["model"])
        for group in (UNGROUPED, *groups.items()):
            key: SummaryKey = (base[0], group[0], group[1], base[1], base[2], base[3])
            for main_key in (key, (*key[:3], ALL_HOURS, *key[4:])):
                entry = self.main.get(main_key)  # type: ignore[arg-type]
                if entry is None:
                    self.main[main_key] = [ints.copy(), floats.copy()]  # type: ignore[index]
                else:
                    entry[0] += ints
                    entry[1] += floats
            if in_confidence:
                lam = self.lambdas.setdefault((*key, lam_bin), np.zeros(2, dtype=np.int64))
                lam += (sign, sign * (not correct))
            if hitl is not None:
                self.bpde.setdefault((*key, *hitl[:2]), np.zeros(12, dtype=np.int64))[cell] += sign
                self.chunks.setdefault((*key, *hitl), np.zeros(12, dtype=np.int64))[cell] += sign

    def apply(self, conn: Connection, driver: Any = None) -> None:
        """Write the sums: one upsert per table, rows in key order, skipping rows that add nothing.
        `driver`: on PostgreSQL, the psycopg connection to run the statements on (one in pipeline
        mode, see store.db.one_round_trip); `conn`'s own by default."""
        _upsert_add(conn, summary_main, SUMMARY_KEY, [
            (*key, *ints.tolist(), *floats.tolist())
            for key, (ints, floats) in sorted(self.main.items()) if ints.any() or floats.any()], driver)
        _upsert_add(conn, summary_lambda, (*SUMMARY_KEY, "lambda_bin"), _rows(self.lambdas), driver)
        _upsert_add(conn, summary_bpde, (*SUMMARY_KEY, "bpde_null", "bpde"), _rows(self.bpde), driver)
        _upsert_add(conn, summary_bpde_chunk, (*SUMMARY_KEY, "bpde_null", "bpde", "chunk"), _rows(self.chunks),
                    driver)


def _rows(sums: Mapping[tuple[Any, ...], np.ndarray]) -> list[tuple[Any, ...]]:
    return [(*(int(k) if isinstance(k, bool) else k for k in key), *values.tolist())
            for key, values in sorted(sums.items()) if values.any()]


_statements: dict[tuple[str, str], tuple[str, str]] = {}


def _upsert_add(conn: Connection, table: Table, key: Sequence[str], rows: list[tuple[Any, ...]],
                driver: Any = None) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET c = c + excluded.c for every other column; rows
    are tuples in the table's column order. Plain SQL text through the driver: building and
    binding a 375-column statement through SQLAlchemy cost most of a worker batch's write time.

    SQLite takes the rows with executemany (in process, cheap). PostgreSQL gets one multi-row
    statement per page of rows, with native $n parameters through a psycopg RawCursor: a statement
    per row costs a server round of its own, and psycopg re-parses long %s queries on every call."""
    if not rows:
        return
    head, tail = _statements.get((conn.dialect.name, table.name)) or _upsert_sql(conn, table, key)
    columns = len(rows[0])
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(f"{head} VALUES ({', '.join('?' * columns)}) {tail}", rows)
        return
    import psycopg

    page = POSTGRES_MAX_PARAMETERS // columns
    with psycopg.RawCursor(driver or conn.connection.dbapi_connection) as cursor:
        for start in range(0, len(rows), page):
            chunk = rows[start:start + page]
            cursor.execute(f"{head} VALUES {placeholders(len(chunk), columns)} {tail}",
                           [v for row in chunk for v in row])


def _upsert_sql(conn: Connection, table: Table, key: Sequence[str]) -> tuple[str, str]:
    quote = conn.dialect.identifier_preparer.quote
    name = quote(table.name)
    columns = [c.name for c in table.columns]
    statement = _statements[(conn.dialect.name, table.name)] = (
        f"INSERT INTO {name} ({', '.join(quote(c) for c in columns)})",
        f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = {name}.{quote(c)} + excluded.{quote(c)}" for c in columns if c not in key))
    return statement


def record_overflow(conn: Connection, job_id: str, keys: Iterable[str]) -> None:
    rows = [{"job_id": job_id, "group_key": key} for key in sorted(set(keys))]
    if rows:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(insert(summary_overflow).on_conflict_do_nothing(), rows)


# ---------------------------------------------------------------- the writers' entry points

def delta_of(rows: Iterable[Mapping[str, Any]]) -> Delta:
    """The summed contributions of verdict rows (with their stat_* columns and group_json)."""
    delta = Delta()
    for row in rows:
        delta.add(row, json.loads(row["group_json"] or "{}"))
    return delta


# Columns a relabel needs from the stored verdict rows.
RELABEL_COLUMNS = (
    VerdictRow.id, VerdictRow.item_id, VerdictRow.job_id, VerdictRow.position, VerdictRow.winner,
    VerdictRow.human_label, VerdictRow.bpde, VerdictRow.abstained, VerdictRow.profile, VerdictRow.model,
    VerdictRow.created_at, VerdictRow.group_json, VerdictRow.stat_certainty_bin, VerdictRow.stat_confidence,
    VerdictRow.stat_lambda_bin, VerdictRow.stat_ece_bin, VerdictRow.stat_p_a, VerdictRow.stat_position,
    VerdictRow.stat_longer, VerdictRow.calls_first, VerdictRow.calls_second, VerdictRow.calls_tie,
)


def relabel(conn: Connection, rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str | None]) -> None:
    """Move the verdict rows (RELABEL_COLUMNS, read before the update) to their new labels."""
    delta = Delta()
    for row in rows:
        new = labels[row["item_id"]]
        if new == row["human_label"]:
            continue
        groups = json.loads(row["group_json"] or "{}")
        delta.add(row, groups, -1)
        delta.add({**row, "human_label": new}, groups, +1)
    delta.apply(conn)


_plans: dict[str, Plan | None] = {}


def job_plan(conn: Connection, job_id: str) -> Plan | None:
    """The job's group plan (cached: it never changes after create_job)."""
    if job_id not in _plans:
        text = conn.execute(select(Job.summary_keys).where(Job.id == job_id)).scalar_one_or_none()
        if len(_plans) >= 4096:
            _plans.clear()
        _plans[job_id] = json.loads(text) if text else None
    return _plans[job_id]


# ---------------------------------------------------------------- migration 0003

def backfill(conn: Connection, page: int = 2000) -> None:
    """Plans, stat columns and summaries for the jobs stored before the summaries existed (no
    plan yet: summary_keys is null); a job with a plan has been summarized as it went."""
    from store.repo import call_from_row, verdict_from_row  # store.repo imports this module

    # The columns of `calls` as they are at this migration: later migrations add others.
    present = {column["name"] for column in inspect(conn).get_columns("calls")}
    call_columns = [column for column in CallRow.__table__.columns if column.name in present]
    for job_id in conn.execute(select(Job.id).where(Job.summary_keys.is_(None)).order_by(Job.id)).scalars().all():
        items = [PairItem.model_validate_json(text) for text in conn.execute(
            select(JobItem.item_json).where(JobItem.job_id == job_id)).scalars()]
        plan = plan_group_keys(items)
        conn.execute(update(Job).where(Job.id == job_id).values(summary_keys=json.dumps(plan)))
        record_overflow(conn, job_id, [k for k, kept in plan.items() if not kept and overflow_key(k)])
        after = -1
        while True:
            rows = conn.execute(select(VerdictRow).where(VerdictRow.job_id == job_id, VerdictRow.position > after)
                                .order_by(VerdictRow.position).limit(page)).all()
            if not rows:
                break
            after = rows[-1].position
            calls: dict[str, list[Any]] = {}
            for call in conn.execute(select(*call_columns).where(
                    CallRow.job_id == job_id, CallRow.item_id.in_([r.item_id for r in rows]))
                    .order_by(CallRow.item_id, CallRow.order, CallRow.sample)):
                calls.setdefault(call.item_id, []).append(call_from_row(call))
            verdicts = [verdict_from_row(r, calls.get(r.item_id, [])) for r in rows]
            delta = Delta()
            overflow: list[str] = []
            updates = []
            for row, verdict, stats in zip(rows, verdicts, stat_columns(verdicts), strict=True):
                groups, extra = verdict_groups(verdict.metadata, plan)
                overflow += extra
                values = {**stats, "group_json": json.dumps(groups, ensure_ascii=False)}
                updates.append({"row_id": row.id, **values})
                delta.add({**row._mapping, **values}, groups)
            conn.execute(update(VerdictRow).where(VerdictRow.id == bindparam("row_id")), updates)
            delta.apply(conn)
            record_overflow(conn, job_id, overflow)



# ---------------------------------------------------------------- migration 0007

def rebuild_empty_key_jobs(conn: Connection) -> None:
    """Summaries made anew for the jobs whose plan summarized a metadata key "" (before it was
    refused): their "" rows were read as part of every total. Their rows are dropped and the job
    summarized again by `backfill`, which refuses the key now."""
    from sqlalchemy import delete

    broken = [job_id for job_id, plan in conn.execute(
        select(Job.id, Job.summary_keys).where(Job.summary_keys.is_not(None))) if json.loads(plan).get(UNGROUPED[0])]
    for job_id in broken:
        for table in (summary_main, summary_lambda, summary_bpde, summary_bpde_chunk, summary_overflow):
            conn.execute(delete(table).where(table.c.job_id == job_id))
        conn.execute(update(Job).where(Job.id == job_id).values(summary_keys=None))
        _plans.pop(job_id, None)
    if broken:
        backfill(conn)
