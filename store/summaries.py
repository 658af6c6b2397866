"""The write side of the verdict summaries: sufficient statistics of the SPEC 4 report per (job,
profile, model, hour, group), kept up to date in the transaction that changes the verdicts.

- record_verdicts adds the contributions of the verdicts it really inserted (`delta_of`);
- attach_labels subtracts a relabelled verdict's old contribution and adds its new one (`relabel`);
- the migrations build them for the jobs stored before they existed (store.backfills).

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
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlmodel import col

from calibration import counts
from calibration.counts import NO_BIN, FloatArray, IntArray
from calibration.report import group_key
from calibration.table import CODES, build_table
from judge.records import PairItem, Verdict
from store.bulk import POSTGRES_MAX_PARAMETERS, placeholders
from store.models import (
    COST_FLOATS,
    COST_INTS,
    SUMMARY_KEY,
    Job,
    VerdictRow,
    summary_bpde,
    summary_bpde_chunk,
    summary_cost,
    summary_lambda,
    summary_main,
    summary_overflow,
    table_of,
)

if TYPE_CHECKING:  # PostgreSQL's driver is the `postgres` extra: imported where used
    import psycopg
    from psycopg.rows import TupleRow

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
# A verdict row's values by column name: a dict made in Python, or a row read back (RowMapping,
# whose keys SQLAlchemy types as names or columns).
VerdictValues = Mapping[str, Any] | RowMapping


def hour_of(moment: datetime) -> int:
    """The summary bucket of a time: whole hours since 1970-01-01 UTC (naive times are UTC, as
    SQLite gives them back)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() // SECONDS_PER_HOUR)


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * SECONDS_PER_HOUR, UTC)


# ---------------------------------------------------------------- per verdict

def _value(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _bin(k: int) -> int | None:
    return None if k == NO_BIN else int(k)


def stat_columns(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The stat_* and calls_* columns of each verdict (see store.models.VerdictRow):
    calibration.counts.stat_columns, the projection's own per-verdict inputs."""
    if not verdicts:
        return []
    s = counts.stat_columns(build_table(verdicts))
    return [
        {
            "stat_certainty": _value(certainty),
            "stat_certainty_bin": _bin(certainty_bin),
            "stat_confidence": _value(confidence),
            "stat_lambda_bin": _bin(lambda_bin),
            "stat_ece_bin": _bin(ece_bin),
            "stat_p_a": _value(p_a),
            "stat_position": position,
            "stat_longer": longer,
            "calls_first": first,
            "calls_second": second,
            "calls_tie": tie,
        }
        for certainty, certainty_bin, confidence, lambda_bin, ece_bin, p_a, position, longer, first, second, tie
        in zip(s.certainty.tolist(), s.certainty_bin.tolist(), s.confidence.tolist(), s.lambda_bin.tolist(),
               s.ece_bin.tolist(), s.p_a.tolist(), s.position.tolist(), s.longer.tolist(),
               s.calls_first.tolist(), s.calls_second.tolist(), s.calls_tie.tolist(), strict=True)
    ]


def rows_of(rows: Sequence[VerdictValues]) -> counts.Rows:
    """Stored verdict rows (VerdictRow's columns) as the projection reads them."""
    def ints(name: str, missing: int = 0) -> IntArray:
        return np.array([missing if r[name] is None else r[name] for r in rows], dtype=np.int64)

    def floats(name: str) -> FloatArray:
        return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)

    stats = counts.StatColumns(
        certainty=np.array([np.nan if r.get("stat_certainty") is None else r["stat_certainty"] for r in rows],
                           dtype=np.float64),
        certainty_bin=ints("stat_certainty_bin", NO_BIN), confidence=floats("stat_confidence"),
        lambda_bin=ints("stat_lambda_bin", NO_BIN), ece_bin=ints("stat_ece_bin", NO_BIN), p_a=floats("stat_p_a"),
        position=ints("stat_position"), longer=ints("stat_longer"), calls_first=ints("calls_first"),
        calls_second=ints("calls_second"), calls_tie=ints("calls_tie"))
    return counts.Rows(
        winner=np.array([CODES[r["winner"]] for r in rows], dtype=np.int64),
        label=np.array([CODES[r["human_label"]] for r in rows], dtype=np.int64),
        abstained=np.array([bool(r["abstained"]) for r in rows], dtype=bool),
        bpde=floats("bpde"), stats=stats)


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
    state: PlanState = {}
    add_to_plan_state(state, items)
    return plan_of_state(state)


# The group names a job's items take so far, by metadata key (None: the key cannot be summarized):
# what plan_group_keys folds items into, kept between the pages of a staged job (store.pages).
PlanState = dict[str, list[str] | None]
MAX_PLANNED_KEYS = 1024  # a staged job's keys beyond these are not summarized (their verdicts overflow)


def add_to_plan_state(state: PlanState, items: Iterable[PairItem], max_keys: int | None = None) -> None:
    """Fold `items`' metadata into `state` (in place). `max_keys`: keys first seen once the state
    holds that many are left out of it (so out of the plan: their verdicts overflow)."""
    seen_sets: dict[str, set[str]] = {}
    for item in items:
        for key, value in item.metadata.items():
            if value is None:
                continue  # None is the "(missing)" group: never a row of its own
            if key not in state:
                if max_keys is not None and len(state) >= max_keys:
                    continue
                state[key] = []
            names = state[key]
            if names is None:
                continue
            seen = seen_sets.setdefault(key, set(names))
            name = group_key(value)
            if not _fits(key, name) or (name not in seen and len(seen) >= MAX_GROUP_VALUES):
                state[key] = None
                continue
            if name not in seen:
                seen.add(name)
                names.append(name)


def merge_plan_states(state: PlanState, other: PlanState, max_keys: int | None = None) -> None:
    """Fold `other` (a later page's state) into `state` in place, as if its items had been added."""
    for key, names in other.items():
        if key not in state:
            if max_keys is not None and len(state) >= max_keys:
                continue
            state[key] = []
        mine = state[key]
        if mine is None:
            continue
        if names is None:
            state[key] = None
            continue
        held = set(mine)
        mine.extend(name for name in names if name not in held)
        if len(mine) > MAX_GROUP_VALUES:
            state[key] = None


def plan_of_state(state: PlanState) -> Plan:
    kept = sorted(key for key, names in state.items() if names is not None)[:MAX_GROUP_KEYS]
    return {key: key in kept for key in sorted(state)}


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

class Delta:
    """Contributions of some verdict rows to the summary tables, summed by summary row with the
    projection of calibration.counts (the report's own)."""

    def __init__(self) -> None:
        self.main: dict[SummaryKey, counts.Counts] = {}
        self.lambdas: dict[tuple[Any, ...], IntArray] = {}
        self.bpde: dict[tuple[Any, ...], IntArray] = {}
        self.chunks: dict[tuple[Any, ...], IntArray] = {}
        self.cost: dict[SummaryKey, tuple[IntArray, FloatArray]] = {}  # COST_INTS, COST_FLOATS

    @classmethod
    def of(cls, rows: Sequence[VerdictValues], groups: Sequence[Mapping[str, str]],
           signs: Sequence[int] | None = None) -> Delta:
        """Add (sign 1) or remove (sign -1) each verdict row (a dict or DB row of VerdictRow's
        columns) under the ungrouped rows and its groups, in its hour and in ALL_HOURS."""
        delta = cls()
        if not rows:
            return delta
        keys: dict[SummaryKey, int] = {}
        row_of: list[int] = []  # (row, key) pairs: the row, and below its key's index
        key_of: list[int] = []
        for i, (row, named) in enumerate(zip(rows, groups, strict=True)):
            hour = hour_of(row["created_at"])
            for group in (UNGROUPED, *named.items()):
                key: SummaryKey = (row["job_id"], group[0], group[1], hour, row["profile"], row["model"])
                row_of.append(i)
                key_of.append(keys.setdefault(key, len(keys)))
        main_keys = list(keys)
        all_hours = {key: i for i, key in enumerate(dict.fromkeys((*k[:3], ALL_HOURS, *k[4:]) for k in main_keys))}
        r = np.array(row_of, dtype=np.int64)
        g = np.array(key_of, dtype=np.int64)
        v = rows_of(rows)
        sign = np.ones(len(rows), dtype=np.int64) if signs is None else np.asarray(signs, dtype=np.int64)
        n = sign[r]
        s = v.stats
        winner, label = v.winner[r], v.label[r]
        has_p = np.isfinite(s.p_a[r])
        p: FloatArray = np.where(has_p, s.p_a[r], 0.0)
        confidence: FloatArray = np.where(np.isfinite(s.confidence[r]), s.confidence[r], 0.0)
        to_all = np.array([all_hours[(*k[:3], ALL_HOURS, *k[4:])] for k in main_keys], dtype=np.int64)
        for group_index, out_keys in ((g, main_keys), (to_all[g], list(all_hours))):
            out = [counts.Counts(risk=np.zeros((0, 2), dtype=np.int64)) for _ in out_keys]
            counts.add_main(out, group_index, winner, label, n, n * v.abstained[r], s.position[r], s.longer[r],
                            n * s.calls_first[r], n * s.calls_second[r], n * s.calls_tie[r], n * has_p, n * p,
                            n * p * p)
            counts.add_certainty(out, group_index, winner, label, n, s.certainty_bin[r])
            counts.add_reliability(out, group_index, winner, label, n, s.ece_bin[r], n * confidence)
            delta.main.update(zip(out_keys, out, strict=True))
        risk = counts.risk_histogram(g, len(main_keys), winner, label, n, s.lambda_bin[r], counts.CANDIDATES)
        for k, b in zip(*np.nonzero(risk.any(axis=-1)), strict=True):
            delta.lambdas[(*main_keys[k], int(b) - 1)] = risk[k, b]
        chunk = np.array([row["position"] // CHUNK for row in rows], dtype=np.int64)[r]
        for (k, bpde, c), cells in counts.hitl_cells(g, winner, label, n, v.bpde[r], chunk).items():
            flat = cells.reshape(12)
            delta.chunks[(*main_keys[k], *bpde, c)] = flat
            bpde_key = (*main_keys[k], *bpde)
            delta.bpde[bpde_key] = delta.bpde[bpde_key] + flat if bpde_key in delta.bpde else flat.copy()
        return delta

    def apply(self, conn: Connection, driver: psycopg.Connection[TupleRow] | None = None) -> None:
        """Write the sums: one upsert per table, rows in key order, skipping rows that add nothing.
        `driver`: on PostgreSQL, the psycopg connection to run the statements on (one in pipeline
        mode, see store.db.one_round_trip); `conn`'s own by default."""
        _upsert_add(conn, summary_main, SUMMARY_KEY, [
            (*key, *c.ints.tolist(), *c.floats.tolist())
            for key, c in sorted(self.main.items()) if c.ints.any() or c.floats.any()], driver)
        _upsert_add(conn, summary_cost, SUMMARY_KEY, [
            (*key, *ints.tolist(), *floats.tolist()) for key, (ints, floats) in sorted(self.cost.items())
            if ints.any() or floats.any()], driver)
        _upsert_add(conn, summary_lambda, (*SUMMARY_KEY, "lambda_bin"), _rows(self.lambdas), driver)
        _upsert_add(conn, summary_bpde, (*SUMMARY_KEY, "bpde_null", "bpde"), _rows(self.bpde), driver)
        _upsert_add(conn, summary_bpde_chunk, (*SUMMARY_KEY, "bpde_null", "bpde", "chunk"), _rows(self.chunks),
                    driver)


def _rows(sums: Mapping[tuple[Any, ...], IntArray]) -> list[tuple[Any, ...]]:
    return [(*(int(k) if isinstance(k, bool) else k for k in key), *values.tolist())
            for key, values in sorted(sums.items()) if values.any()]


_statements: dict[tuple[str, str], tuple[str, str]] = {}


def _upsert_add(conn: Connection, table: Table, key: Sequence[str], rows: list[tuple[Any, ...]],
                driver: psycopg.Connection[TupleRow] | None = None) -> None:
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
    connection = driver or conn.connection.driver_connection  # psycopg's own connection
    if not isinstance(connection, psycopg.Connection):
        raise TypeError(f"a PostgreSQL connection through psycopg expected, not {type(connection).__name__}")
    with psycopg.RawCursor(connection) as cursor:
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
    """The summed contributions of new verdict rows (with their stat_* columns, group_json and cost
    columns), summary_cost's included."""
    rows = list(rows)
    delta = Delta.of(rows, [json.loads(row["group_json"] or "{}") for row in rows])
    delta.cost = cost_of(rows)
    return delta


def cost_of(rows: Iterable[VerdictValues]) -> dict[SummaryKey, tuple[IntArray, FloatArray]]:
    """summary_cost's sums of verdict rows (COST_INTS, COST_FLOATS), per (job, hour, profile, model):
    what SQL's COUNT and SUM of the cost columns give (store.stats reads them as calibration.cost's
    CostSums). Relabelling never changes them."""
    out: dict[SummaryKey, tuple[IntArray, FloatArray]] = {}
    for row in rows:
        key: SummaryKey = (row["job_id"], *UNGROUPED, hour_of(row["created_at"]), row["profile"], row["model"])
        ints, floats = out.setdefault(key, (np.zeros(len(COST_INTS), dtype=np.int64),
                                            np.zeros(len(COST_FLOATS), dtype=np.float64)))
        cached, batch, cache = row["cached_input_tokens"], row["saved_batch_usd"], row["saved_cache_usd"]
        ints += (1, row["n_calls"] or 0, row["input_tokens"] or 0, cached or 0, cached is not None,
                 batch is not None, cache is not None)
        floats += (row["cost_usd"] or 0.0, batch or 0.0, cache or 0.0)
    return out


# Columns a relabel needs from the stored verdict rows.
RELABEL_COLUMNS = tuple(table_of(VerdictRow).c[name] for name in (
    "id", "item_id", "job_id", "position", "winner", "human_label", "bpde", "abstained", "profile", "model",
    "created_at", "group_json", "stat_certainty_bin", "stat_confidence", "stat_lambda_bin", "stat_ece_bin",
    "stat_p_a", "stat_position", "stat_longer", "calls_first", "calls_second", "calls_tie",
))


def relabel(conn: Connection, rows: Sequence[RowMapping], labels: Mapping[str, str | None]) -> None:
    """Move the verdict rows (RELABEL_COLUMNS, read before the update) to their new labels."""
    moved: list[VerdictValues] = []
    groups: list[dict[str, str]] = []
    signs: list[int] = []
    for row in rows:
        new = labels[row["item_id"]]
        if new == row["human_label"]:
            continue
        named = json.loads(row["group_json"] or "{}")
        relabelled: dict[str, Any] = {**row, "human_label": new}
        moved += [row, relabelled]
        groups += [named, named]
        signs += [-1, 1]
    Delta.of(moved, groups, signs).apply(conn)


_plans: dict[str, Plan | None] = {}


def forget_plan(job_id: str) -> None:
    """Drop a job's cached plan (a migration reset it)."""
    _plans.pop(job_id, None)


def job_plan(conn: Connection, job_id: str) -> Plan | None:
    """The job's group plan (cached: it never changes after create_job)."""
    if job_id not in _plans:
        text = conn.execute(select(col(Job.summary_keys)).where(col(Job.id) == job_id)).scalar_one_or_none()
        if len(_plans) >= 4096:
            _plans.clear()
        _plans[job_id] = json.loads(text) if text else None
    return _plans[job_id]
