"""The read side of the verdict summaries: the SPEC 4 report of a selection of verdicts (one job,
or an owner's jobs filtered by profile, model and time), summed in SQL, never by a Python loop
over the verdicts.

The summaries (store.summaries) are kept per hour of created_at. A time filter takes the whole
hours inside [since, until) from the summaries and the verdicts of the cut hours at either end from
the verdict table itself (aggregate queries over those rows only), so since and until are exact to
the microsecond.

Two steps need more than the summaries, both resolved exactly:
- a certainty threshold off the 0.01 grid: the summaries' cumulative certainty histogram places every
  verdict but those of the one 0.01 bin the threshold cuts, which one aggregate query over the
  selection's verdict rows compares with it (a scan, so slower; the default 0.8 and the coverage
  curve are on the grid);
- the HITL cut: the summaries give each BPDE value's counts, so only the value the cut runs through
  needs its first m items in input order ((job created_at, job id, position), as the verdicts reach
  build_report). Its counts per job find the job the cut ends in, its counts per chunk of 1024
  positions the chunk, and one query reads at most 1024 verdict rows of that chunk.

`report` returns None when group_by names a metadata key some verdicts of the selection are not
summarized under (summary_overflow), or a key never summarized ("", or holding NUL: see
store.summaries); the caller then computes from the verdicts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    SQLColumnExpression,
    Table,
    Text,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause
from sqlmodel import col

from calibration import counts as projection
from calibration.cost import COST_COLUMNS, CostSums, cost_section
from calibration.counts import (
    ECE_FIELDS,
    FLOAT_FIELDS,
    MAIN_FIELDS,
    BpdeKey,
    Counts,
    FloatArray,
    IntArray,
    bpde_key,
    certainty_fields,
    grid_index,
)
from calibration.from_counts import Cut, report_from_counts
from calibration.report import MISSING_GROUP
from calibration.table import CODES, DECIMALS
from store import bulk, summaries
from store.bulk import in_slices
from store.models import (
    COST_FLOATS,
    COST_INTS,
    HITL_CELLS,
    LAMBDA_COUNTS,
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
from store.summaries import ALL_HOURS, SECONDS_PER_HOUR, hour_of, hour_start

V = VerdictRow
VERDICTS = table_of(VerdictRow)  # its Core table: columns by name
# group_by values that group by a column of the verdicts rather than a metadata key
BUILTIN_GROUPS = {"profile": "profile", "model": "model", "job": "job_id"}
K = TypeVar("K", str, int)  # a job id or a chunk
_WINNERS = ("A", "B", "tie", None)


@dataclass(frozen=True)
class Selection:
    """Which verdicts: a job's (job_id) and/or an owner's, filtered like /v1/stats/agreement."""

    owner: str | None = None
    job_id: str | None = None
    profile: str | None = None
    model: str | None = None
    since: datetime | None = None  # aware
    until: datetime | None = None


@dataclass(frozen=True)
class TimeSplit:
    """[since, until) as whole summary hours [lo, hi) plus the cut ends as exact intervals."""

    lo: int | None
    hi: int | None
    partial: tuple[tuple[datetime, datetime], ...] = ()


def split_time(since: datetime | None, until: datetime | None) -> TimeSplit:
    if since is not None and until is not None and since >= until:
        return TimeSplit(0, 0)
    if since is not None and until is not None and hour_of(since) == hour_of(until):
        return TimeSplit(0, 0, ((since, until),))  # both ends inside one hour: no whole hour
    cut_since = since is not None and since.timestamp() % SECONDS_PER_HOUR != 0
    cut_until = until is not None and until.timestamp() % SECONDS_PER_HOUR != 0
    lo = None if since is None else hour_of(since) + cut_since
    hi = None if until is None else hour_of(until)
    partial = []
    if since is not None and cut_since:
        partial.append((since, hour_start(hour_of(since) + 1)))
    if until is not None and cut_until:
        partial.append((hour_start(hour_of(until)), until))
    return TimeSplit(lo, hi, tuple(partial))


@dataclass(frozen=True)
class Grouping:
    """How by_group is formed: nothing, a verdict column (BUILTIN_GROUPS), or a metadata key."""

    name: str | None = None
    column: str | None = None  # builtin: a column of the verdicts and of the summaries
    key: str | None = None  # metadata key

    @classmethod
    def of(cls, group_by: str | None, builtins: bool) -> Grouping:
        if group_by is None:
            return cls()
        if builtins and group_by in BUILTIN_GROUPS:
            return cls(group_by, column=BUILTIN_GROUPS[group_by])
        return cls(group_by, key=group_by)


# ---------------------------------------------------------------- SQL pieces

def _constant(value: Any) -> ColumnElement[Any]:
    """A constant rendered into the SQL text: PostgreSQL accepts a GROUP BY expression only if it is
    the selected one token for token, and two bound parameters are two different tokens."""
    return literal(value, literal_execute=True)


def _group_value(conn: Connection, key: str, grouped: bool) -> ColumnElement[str]:
    """The verdict's group name under a metadata key, from group_json (which holds exactly the keys
    it is summarized under), "(missing)" where it has none. grouped: for GROUP BY, with the
    constants in the SQL text (bound parameters cost a rewrite of the statement per execution)."""
    constant = _constant if grouped else literal
    value: ColumnElement[Any]
    if conn.dialect.name == "postgresql":
        value = func.jsonb_extract_path_text(cast(col(V.group_json), JSONB), constant(key))
    else:  # json_each matches the key as a value: no JSON path quoting to get wrong
        each = func.json_each(col(V.group_json)).table_valued("key", "value")
        value = select(each.c.value).where(each.c.key == constant(key)).scalar_subquery()
    return func.coalesce(value, constant(MISSING_GROUP))


def _chunk_of() -> ColumnElement[int]:
    """A verdict's HITL chunk (store.summaries.CHUNK read at call time: tests shrink it)."""
    return col(V.position) // literal_column(str(summaries.CHUNK))


# Labelled rows: the HITL selection's population, as a filter (what a labelled item is, and every
# other formula, is calibration.counts').
_LABELLED = col(V.human_label).is_not(None)
_BPDE_NULL = case((col(V.bpde).is_(None), literal_column("1")), else_=literal_column("0"))
_BPDE_VALUE = func.coalesce(col(V.bpde), literal_column("0.0"))


def _bpde_is(null: bool, value: float) -> ColumnElement[bool]:
    """The verdicts with this BPDE key (calibration.counts.bpde_key: null, or the value)."""
    return col(V.bpde).is_(None) if null else col(V.bpde) == value

Named = dict[str, SQLColumnExpression[Any]]
"""Result columns by name: a query selects their values, its rows come back as dicts by name."""


@dataclass(frozen=True)
class _Arrays:
    """Grouped verdict rows as the projection's arrays: `group` indexes the query's sets."""

    group: IntArray
    columns: dict[str, npt.NDArray[Any]]  # IntArray or FloatArray

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.columns[name]

    @property
    def winner(self) -> IntArray:
        return self.columns["winner"]

    @property
    def label(self) -> IntArray:
        return self.columns["label"]


def _arrays(rows: Sequence[dict[str, Any]], sets: dict[str | None, int], names: Sequence[str],
            floats: Sequence[str] = ()) -> _Arrays:
    """Rows with "set", "winner", "label" and the named sums (None as 0; a bin's None as NO_BIN)."""
    group = np.array([sets.setdefault(r["set"], len(sets)) for r in rows], dtype=np.int64)
    columns = {
        "winner": np.array([CODES[r["winner"]] for r in rows], dtype=np.int64),
        "label": np.array([CODES[r["label"]] for r in rows], dtype=np.int64),
    }
    for name in names:
        missing = projection.NO_BIN if name.endswith("bin") else 0
        columns[name] = np.array([missing if r[name] is None else int(r[name]) for r in rows], dtype=np.int64)
    for name in floats:
        columns[name] = np.array([0.0 if r[name] is None else float(r[name]) for r in rows], dtype=np.float64)
    return _Arrays(group, columns)


def _sums(table: Table, names: Sequence[str]) -> ColumnElement[Any]:
    """SUM of each named column as one prebuilt SQL fragment (hundreds of columns: building them as
    expressions per request cost more than the query)."""
    return literal_column(", ".join(f"SUM({table.name}.{name})" for name in names))


@functools.lru_cache(maxsize=128)
def _main_fields(threshold: float) -> tuple[tuple[str, ...], ColumnElement[Any]]:
    """The summary_main fields a report at this threshold reads, and their SUMs."""
    fields = (*MAIN_FIELDS, *ECE_FIELDS, *certainty_fields(threshold), *FLOAT_FIELDS)
    return fields, _sums(summary_main, fields)


LAMBDA_SUMS = _sums(summary_lambda, LAMBDA_COUNTS)
CELL_SUMS = {table.name: _sums(table, HITL_CELLS) for table in (summary_bpde, summary_bpde_chunk)}


# Built once: a join costs most of a millisecond to construct.
_JOINED = {table.name: table.join(Job, col(Job.id) == table.c.job_id)
           for table in (summary_main, summary_lambda, summary_bpde, summary_bpde_chunk, summary_cost)}




def _counts_of(groups: dict[str | None, Counts], name: str | None) -> Counts:
    """groups[name], made when missing (not setdefault: a Counts holds a 5,001-row risk table)."""
    counts = groups.get(name)
    if counts is None:
        counts = groups[name] = Counts()
    return counts


def _bpde_array(a: _Arrays) -> FloatArray:
    """The rows' BPDE, NaN when null."""
    return np.where(a["bpde_null"] == 1, np.nan, a["bpde"])


def _ints(values: Iterable[Any]) -> IntArray:
    return np.array([int(v or 0) for v in values], dtype=np.int64)


# ---------------------------------------------------------------- one request's queries

@dataclass
class _Query:
    """One request's selection, grouping and connection, with the queries it runs."""

    conn: Connection
    selection: Selection
    grouping: Grouping
    risk: bool = False  # read the lambda histogram (risk_control)
    threshold: float = 0.8  # the certainty split's, which decides the certainty fields read
    time: TimeSplit = field(init=False)
    _created: dict[str, datetime] = field(init=False, default_factory=dict)
    _dim: ColumnElement[Any] | None = field(init=False, default=None)
    _filter_dim: ColumnElement[Any] | None = field(init=False, default=None)
    _owned: set[str] | None = field(init=False, default=None)
    _partial_bpde: dict[tuple[datetime, datetime], list[dict[str, Any]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.time = split_time(self.selection.since, self.selection.until)

    # -- filters
    def summary_filter(self, table: Table, group_key: str | None = "") -> list[ColumnElement[bool]]:
        """The selection on a summary table (from `summary_from`); group_key None: any."""
        t = self.time
        where: list[ColumnElement[bool]] = [] if group_key is None else [table.c.group_key == group_key]
        where += self._filter_jobs(table)
        if table is summary_main:  # its all-hours rows, unless a time filter needs the hours
            if t.lo is None and t.hi is None:
                return [*where, table.c.hour == ALL_HOURS]
            where.append(table.c.hour != ALL_HOURS)
        return [*where, *self._filter_hours(table)]

    def _filter_jobs(self, table: Table) -> list[ColumnElement[bool]]:
        s = self.selection
        where: list[ColumnElement[bool]] = []
        if s.owner is not None:
            where.append(col(Job.owner) == s.owner)
        if s.job_id is not None:
            where.append(table.c.job_id == s.job_id)
        if s.profile is not None:
            where.append(table.c.profile == s.profile)
        if s.model is not None:
            where.append(table.c.model == s.model)
        return where

    def _filter_hours(self, table: Table) -> list[ColumnElement[bool]]:
        t = self.time
        where: list[ColumnElement[bool]] = []
        if t.lo is not None:
            where.append(table.c.hour >= t.lo)
        if t.hi is not None:
            where.append(table.c.hour < t.hi)
        return where

    def summary_from(self, table: Table) -> FromClause:
        # The owner's jobs drive the query: each then reads its summary rows by primary key prefix.
        return _JOINED[table.name] if self.selection.owner is not None else table

    def verdict_filter(self, since: datetime | None, until: datetime | None,
                       owner: bool = True) -> list[ColumnElement[bool]]:
        """The selection on verdict rows created in [since, until). The owner is an EXISTS, not a
        join: joined, SQLite's planner walks the owner's jobs and all their verdicts instead of the
        created_at index. owner=False leaves it out, for queries grouped by job that keep only the
        `owned` jobs (cheaper than a lookup per row)."""
        s = self.selection
        where: list[ColumnElement[bool]] = []
        if s.owner is not None and owner:
            where.append(select(col(Job.id))
                         .where(col(Job.id) == col(V.job_id), col(Job.owner) == s.owner).exists())
        if s.job_id is not None:
            where.append(col(V.job_id) == s.job_id)
        if s.profile is not None:
            where.append(col(V.profile) == s.profile)
        if s.model is not None:
            where.append(col(V.model) == s.model)
        if since is not None:
            where.append(col(V.created_at) >= since)
        if until is not None:
            where.append(col(V.created_at) < until)
        return where

    def owned(self, job_id: str) -> bool:
        """Whether a job is the selection's owner's (always, without an owner filter)."""
        if self.selection.owner is None:
            return True
        if self._owned is None:
            owned = select(col(Job.id)).where(col(Job.owner) == self.selection.owner)
            self._owned = set(self.conn.execute(owned).scalars())
        return job_id in self._owned

    def verdict_dim(self) -> ColumnElement[Any] | None:
        """The verdict rows' group name expression (None without grouping)."""
        g = self.grouping
        if g.column is not None:
            return VERDICTS.c[g.column]
        if g.key is not None:
            if self._dim is None:
                self._dim = _group_value(self.conn, g.key, grouped=True)
            return self._dim
        return None

    # -- sums by group: {group name (None: all) -> Counts}, and the judge models seen
    def counts(self) -> tuple[dict[str | None, Counts], set[str]]:
        g = self.grouping
        models: set[str] = set()
        groups = self._summary_counts("", g.column, models)
        if g.key is not None:
            total = _counts_of(groups, None)
            named = self._summary_counts(g.key, "group_value", models)
            # Verdicts without the key (or with a null) are in the total only; the total minus the
            # named groups also keeps any literal "(missing)" value, which build_report merges too.
            missing = Counts().add(total)
            for name, counts in named.items():
                if name != MISSING_GROUP:
                    missing.add(counts, -1)
            named[MISSING_GROUP] = missing
            groups.update(named)
        for since, until in self.time.partial:
            for name, counts in self._verdict_counts(since, until, models).items():
                _counts_of(groups, name).add(counts)
                if g.key is not None:
                    groups[None].add(counts)
        if g.column is not None:  # the total is the sum of the groups
            groups[None] = Counts()
            for name, counts in list(groups.items()):
                if name is not None:
                    groups[None].add(counts)
        _counts_of(groups, None)
        return groups, models

    def _summary_counts(self, group_key: str, dim: str | None, models: set[str]) -> dict[str | None, Counts]:
        """{set: Counts} summed from the summary rows of `group_key` ("": the ungrouped rows), the
        sets named by the `dim` column (None: one set, None)."""
        out: dict[str | None, Counts] = {}

        def rows(table: Table, by: Named, sums: ColumnElement[Any], names: Sequence[str]
                 ) -> Iterator[tuple[Counts, dict[str, Any], Sequence[Any]]]:
            """(the set's Counts, the row's `by` values, its sums in `names` order)."""
            dims: Named = {"set": table.c[dim]} if dim is not None else {}
            columns = {**dims, **by}
            query = (select(*columns.values(), sums).select_from(self.summary_from(table))
                     .where(*self.summary_filter(table, group_key)).group_by(*columns.values()))
            for values in self.conn.execute(query):
                row = dict(zip(columns, values[:len(columns)], strict=True))
                yield _counts_of(out, row.get("set")), row, values[len(columns):len(columns) + len(names)]

        t = summary_main
        fields, sums = _main_fields(self.threshold)
        for counts, row, values in rows(t, {"model": t.c.model}, sums, fields):
            models.add(row["model"])
            counts.add_fields(fields, values)
        if self.risk:
            t = summary_lambda
            for counts, row, values in rows(t, {"lambda_bin": t.c.lambda_bin}, LAMBDA_SUMS, LAMBDA_COUNTS):
                counts.risk[row["lambda_bin"] + 1] += _ints(values)
        t = summary_bpde
        for counts, row, values in rows(t, {"bpde_null": t.c.bpde_null, "bpde": t.c.bpde}, CELL_SUMS[t.name],
                                        HITL_CELLS):
            counts.add_hitl(bpde_key(None if row["bpde_null"] else row["bpde"]), _ints(values))
        return out

    def _verdict_rows(self, since: datetime | None, until: datetime | None, by: Named, sums: Named,
                      where: Sequence[ColumnElement[bool]] = ()) -> list[dict[str, Any]]:
        """The selection's verdict rows created in [since, until), grouped by job, set (the group
        name; None without grouping), winner, label and `by`, with the `sums`; the owner's jobs
        only (grouped by job, cheaper than a lookup per row)."""
        dim = self.verdict_dim()
        dims: Named = {"job_id": col(V.job_id), **({"set": dim} if dim is not None else {}),
                       "winner": col(V.winner), "label": col(V.human_label), **by}
        columns = {**dims, **sums}
        query = (select(*columns.values()).where(*self.verdict_filter(since, until, owner=False), *where)
                 .group_by(*dims.values()))
        out = []
        for values in self.conn.execute(query):
            row = dict(zip(columns, values, strict=True))
            if self.owned(row["job_id"]):
                row.setdefault("set", None)
                out.append(row)
        return out

    def _verdict_counts(self, since: datetime, until: datetime, models: set[str]) -> dict[str | None, Counts]:
        """The same counts straight from the verdict rows created in [since, until): SQL groups
        them and sums their stored stat columns, calibration.counts projects the groups."""
        sets: dict[str | None, int] = {}
        batches: list[tuple[str, _Arrays]] = []

        p_a = col(V.stat_p_a)
        main = self._verdict_rows(since, until, {
            "model": col(V.model), "abstained": col(V.abstained), "position": col(V.stat_position),
            "longer": col(V.stat_longer)}, {
            "n": func.count(), "calls_first": func.sum(col(V.calls_first)),
            "calls_second": func.sum(col(V.calls_second)), "calls_tie": func.sum(col(V.calls_tie)),
            "p_n": func.count(p_a), "p_sum": func.sum(p_a), "p_squares": func.sum(p_a * p_a)})
        models.update(row["model"] for row in main)
        for row in main:
            row["abstained"] = bool(row["abstained"])
        batches.append(("main", _arrays(main, sets, ("n", "abstained", "position", "longer", "calls_first",
                                                     "calls_second", "calls_tie", "p_n"), ("p_sum", "p_squares"))))
        # The certainty histogram and the reliability bins in one pass (their bins go together).
        bins = self._verdict_rows(
            since, until, {"certainty_bin": col(V.stat_certainty_bin), "ece_bin": col(V.stat_ece_bin)},
            {"n": func.count(), "confidence_sum": func.sum(col(V.stat_confidence))})
        batches.append(("bins", _arrays(bins, sets, ("n", "certainty_bin", "ece_bin"), ("confidence_sum",))))
        if self.risk:
            risk = self._verdict_rows(since, until, {"lambda_bin": col(V.stat_lambda_bin)},
                                      {"n": func.count()})
            batches.append(("risk", _arrays(risk, sets, ("n", "lambda_bin"))))
        # Labelled verdicts by BPDE: the HITL table here, and kept for the HITL cut's counts per job
        # (`_cut_counts_by_job`), which are the same rows.
        hitl = self._partial_bpde[(since, until)] = self._verdict_rows(
            since, until, {"bpde_null": _BPDE_NULL, "bpde": _BPDE_VALUE}, {"n": func.count()}, [_LABELLED])
        batches.append(("hitl", _arrays(hitl, sets, ("n", "bpde_null"), ("bpde",))))

        out = [Counts() for _ in sets]
        for family, a in batches:
            if family == "main":
                projection.add_main(out, a.group, a.winner, a.label, a["n"], a["abstained"] * a["n"], a["position"],
                                    a["longer"], a["calls_first"], a["calls_second"], a["calls_tie"], a["p_n"],
                                    a["p_sum"], a["p_squares"])
            elif family == "bins":
                projection.add_certainty(out, a.group, a.winner, a.label, a["n"], a["certainty_bin"])
                projection.add_reliability(out, a.group, a.winner, a.label, a["n"], a["ece_bin"],
                                           a["confidence_sum"])
            elif family == "risk":
                projection.add_risk(out, a.group, a.winner, a.label, a["n"], a["lambda_bin"])
            else:
                projection.add_hitl(out, a.group, a.winner, a.label, a["n"], _bpde_array(a))
        return {name: out[i] for name, i in sets.items()}

    # -- the certainty split at an off-grid threshold, by group
    def splits(self, threshold: float, groups: Mapping[str | None, Counts]
               ) -> dict[str | None, tuple[IntArray, IntArray]]:
        """{set: ([n, labelled, correct] high, ... low)} at an off-grid threshold, from each set's
        certainty histogram (`counts`) and the selection's verdicts in the one certainty bin the
        threshold cuts (calibration.counts.split_from_bin): one aggregate query over those rows."""
        cut = round(threshold, DECIMALS)  # as calibration.certainty.split_counts
        high = case((col(V.stat_certainty) >= cut, 1), else_=0)
        rows = self._verdict_rows(self.selection.since, self.selection.until, {"high": high}, {"n": func.count()},
                                  [col(V.stat_certainty_bin) == projection.cut_bin(threshold)])
        sets: dict[str | None, int] = {None: 0}
        a = _arrays(rows, sets, ("n", "high"))
        known = np.ones(len(rows), dtype=bool)
        everything = np.zeros(len(rows), dtype=np.int64)
        in_bin: dict[str | None, IntArray] = {
            None: projection.split_histogram(everything, 1, a.winner, a.label, a["n"], a["high"], known)[0][0]}
        if self.verdict_dim() is not None:
            by_set = projection.split_histogram(a.group, len(sets), a.winner, a.label, a["n"], a["high"], known)
            in_bin.update((name, by_set[i][0]) for name, i in sets.items() if name is not None)
        none = np.zeros(3, dtype=np.int64)
        return {name: projection.split_from_bin(counts, threshold, in_bin.get(name, none))
                for name, counts in groups.items()}

    # -- the HITL cuts
    def resolve(self, cuts: Mapping[str | None, Cut]) -> dict[str | None, IntArray]:
        """For each set's cut, the winner x label counts of the first m labelled items with its BPDE
        value in input order: the counts per job find the job the cut ends in (one query for all
        sets), that job's counts per chunk the chunk (one query), then one query per set reads at
        most a chunk of verdict rows."""
        taken = {name: np.zeros((4, 3), dtype=np.int64) for name in cuts}
        by_job = self._cut_counts_by_job(cuts)
        created = self._job_created({job for counts in by_job.values() for job in counts})
        ends: dict[str | None, tuple[str, int]] = {}
        for name, (_, m) in cuts.items():
            for job_id in sorted(by_job[name], key=lambda j: (created[j], j)):
                cells = by_job[name][job_id]
                if cells.sum() < m:
                    taken[name] += cells
                    m -= int(cells.sum())
                    continue
                ends[name] = (job_id, m)
                break
        by_chunk = self._cut_counts_by_chunk({name: cuts[name] for name in ends},
                                             {name: job for name, (job, _) in ends.items()}) if ends else {}
        for name, (job_id, m) in ends.items():
            key = cuts[name][0]
            for chunk in sorted(by_chunk[name]):
                cells = by_chunk[name][chunk]
                if cells.sum() < m:
                    taken[name] += cells
                    m -= int(cells.sum())
                    continue
                taken[name] += self._first_in_chunk(name, key, job_id, chunk, m)
                break
        return taken

    def _member(self, name: str | None, group_key: str, group_value: str, column_value: Any) -> int:
        """How a summary row counts toward a set: 1, 0, or -1 (the "(missing)" group is the total
        minus the named groups)."""
        g = self.grouping
        if name is None:
            return int(group_key == "")
        if g.column is not None:
            return int(group_key == "" and column_value == name)
        if name != MISSING_GROUP:
            return int(group_key == g.key and group_value == name)
        return 1 if group_key == "" else -int(group_value != MISSING_GROUP)

    def _cut_counts_by_job(self, cuts: Mapping[str | None, Cut]) -> dict[str | None, dict[str, IntArray]]:
        """{set: {job: 4 x 3 counts}} of the labelled items with each set's cut BPDE value:
        summary_bpde for the whole hours, the rows `_verdict_counts` read for the cut ones."""
        out: dict[str | None, dict[str, IntArray]] = {name: {} for name in cuts}
        for name, row, cells in self._cut_summary_rows(summary_bpde, cuts, None):
            _add_cells(out[name], row["job_id"], cells)
        for since, until in self.time.partial:
            for name, row, cells in self._cut_verdict_rows(self._partial_bpde[(since, until)], cuts, None):
                _add_cells(out[name], row["job_id"], cells)
        return out

    def _cut_counts_by_chunk(self, cuts: Mapping[str | None, Cut],
                             jobs: Mapping[str | None, str]) -> dict[str | None, dict[int, IntArray]]:
        """{set: {chunk of the set's job: 4 x 3 counts}} of the labelled items with each set's cut
        BPDE value: summary_bpde_chunk for the whole hours, the verdict rows for the cut ones."""
        out: dict[str | None, dict[int, IntArray]] = {name: {} for name in cuts}
        for name, row, cells in self._cut_summary_rows(summary_bpde_chunk, cuts, jobs):
            _add_cells(out[name], row["chunk"], cells)
        bpde = or_(*(_bpde_is(null, value) for null, value in _cut_keys(cuts)))
        for since, until in self.time.partial:
            # No job filter in SQL: with one, SQLite reads the jobs' verdicts by job instead of the
            # cut hour's by created_at. The rows are grouped by job anyway.
            rows = self._verdict_rows(since, until, {"chunk": _chunk_of(), "bpde_null": _BPDE_NULL,
                                                     "bpde": _BPDE_VALUE}, {"n": func.count()}, [_LABELLED, bpde])
            for name, row, cells in self._cut_verdict_rows(rows, cuts, jobs):
                _add_cells(out[name], row["chunk"], cells)
        return out

    def _cut_summary_rows(self, table: Table, cuts: Mapping[str | None, Cut], jobs: Mapping[str | None, str] | None
                          ) -> Iterator[tuple[str | None, dict[str, Any], IntArray]]:
        """(set, row, its signed 4 x 3 counts toward the set) of a HITL summary table's rows (by job,
        and by chunk for summary_bpde_chunk) with a cut BPDE value; `jobs`: only each set's job."""
        g = self.grouping
        columns: Named = {"group_key": table.c.group_key, "group_value": table.c.group_value,
                          **({"column_value": table.c[g.column]} if g.column else {}), "job_id": table.c.job_id,
                          **({"chunk": table.c.chunk} if "chunk" in table.c else {}),
                          "bpde_null": table.c.bpde_null, "bpde": table.c.bpde}
        where = [*self.summary_filter(table, None), table.c.group_key.in_(["", *([g.key] if g.key else [])])]
        # The cut values and jobs narrow the rows in SQL too when few: the rows are matched to them
        # below anyway, and one IN list per set (group_by=job over many jobs) would pass
        # PostgreSQL's 65,535 bound parameters.
        keys = _cut_keys(cuts)
        if len(keys) <= bulk.MAX_IN_LIST:
            where.append(tuple_(table.c.bpde_null, table.c.bpde).in_([(int(null), value) for null, value in keys]))
        job_ids = sorted(set(jobs.values())) if jobs is not None else None
        if job_ids is not None and len(job_ids) <= bulk.MAX_IN_LIST:
            where.append(table.c.job_id.in_(job_ids))
        query = (select(*columns.values(), CELL_SUMS[table.name]).select_from(self.summary_from(table))
                 .where(*where).group_by(*columns.values()))
        for values in self.conn.execute(query):
            row = dict(zip(columns, values[:len(columns)], strict=True))
            cells = _ints(values[len(columns):]).reshape(4, 3)  # HITL_CELLS, in CELL_SUMS's order
            key = bpde_key(None if row["bpde_null"] else row["bpde"])
            for name, (cut_key, _) in cuts.items():
                sign = self._member(name, row["group_key"], row["group_value"], row.get("column_value"))
                if cut_key == key and sign and (jobs is None or jobs[name] == row["job_id"]):
                    yield name, row, sign * cells

    def _cut_verdict_rows(self, rows: Iterable[dict[str, Any]], cuts: Mapping[str | None, Cut],
                          jobs: Mapping[str | None, str] | None
                          ) -> Iterator[tuple[str | None, dict[str, Any], IntArray]]:
        """(set, row, its 4 x 3 counts) of grouped labelled verdict rows (`_verdict_rows`) with a cut
        BPDE value; `jobs`: only each set's job."""
        for row in rows:
            if row["label"] is None:
                continue
            key = bpde_key(None if row["bpde_null"] else row["bpde"])
            cells = np.zeros((4, 3), dtype=np.int64)
            cells[CODES[row["winner"]], CODES[row["label"]]] = row["n"]
            for name, (cut_key, _) in cuts.items():
                if cut_key == key and (name is None or row["set"] == name) and (jobs is None or jobs[name] == row["job_id"]):
                    yield name, row, cells

    def _verdict_group(self, group: str | None) -> list[ColumnElement[bool]]:
        """The filter of a set's verdict rows (None: all)."""
        g = self.grouping
        if group is None:
            return []
        if g.column is not None:
            return [VERDICTS.c[g.column] == group]
        if g.key is None:
            return []
        if self._filter_dim is None:
            self._filter_dim = _group_value(self.conn, g.key, grouped=False)
        return [self._filter_dim == group]

    def _first_in_chunk(self, name: str | None, key: BpdeKey, job_id: str, chunk: int, m: int) -> IntArray:
        """The 4 x 3 counts of the set's first m labelled items with this BPDE in a job's chunk."""
        size = summaries.CHUNK
        position = col(V.position)
        first = (select(col(V.winner), col(V.human_label))
                 .where(col(V.job_id) == job_id, position >= chunk * size, position < (chunk + 1) * size,
                        *self.verdict_filter(self.selection.since, self.selection.until, owner=False),
                        *self._verdict_group(name), _LABELLED, _bpde_is(*key))
                 .order_by(position).limit(m).subquery())
        taken = np.zeros((4, 3), dtype=np.int64)
        for winner, label, n in self.conn.execute(select(first.c.winner, first.c.human_label, func.count())
                                                  .group_by(first.c.winner, first.c.human_label)):
            taken[CODES[winner], CODES[label]] += n
        return taken

    def _job_created(self, job_ids: Iterable[str]) -> dict[str, datetime]:
        """created_at of jobs, which orders the input across jobs (SQLite gives naive UTC)."""
        missing = [j for j in job_ids if j not in self._created]
        for some in in_slices(missing):
            created_at = select(col(Job.id), col(Job.created_at)).where(col(Job.id).in_(some))
            for job_id, created in self.conn.execute(created_at):
                self._created[job_id] = created.replace(tzinfo=UTC) if created.tzinfo is None else created
        return self._created


def _cut_keys(cuts: Mapping[str | None, Cut]) -> list[BpdeKey]:
    return sorted({cut[0] for cut in cuts.values()})


def _add_cells(counts: dict[K, IntArray], key: K, cells: IntArray) -> None:
    counts[key] = counts[key] + cells if key in counts else cells


# ---------------------------------------------------------------- cost (calibration.cost)

def cost_sections(query: _Query) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The `cost` section of the selection, and of each builtin group (profile, model, job) when
    grouped so: summary_cost's sums per profile (and group) for the whole hours, the verdict rows'
    for the cut hours at since and until; the section's formula is calibration.cost's."""
    column = query.grouping.column
    total: dict[str, CostSums] = {}
    groups: dict[str, dict[str, CostSums]] = {}
    for profile, group, part in _cost_parts(query, column):
        total[profile] = total.get(profile, CostSums()) + part
        if column is not None:
            by_profile = groups.setdefault(str(group), {})
            by_profile[profile] = by_profile.get(profile, CostSums()) + part
    return cost_section(total), {name: cost_section(by_profile) for name, by_profile in groups.items()}


_COST_SUMS = _sums(summary_cost, (*COST_INTS, *COST_FLOATS))


def _cost_of_summary(values: Sequence[Any]) -> CostSums:
    """CostSums from summary_cost's summed COST_INTS and COST_FLOATS (a nullable input is null
    where no verdict knew it, as SQL's SUM over the verdict rows says)."""
    row = dict(zip((*COST_INTS, *COST_FLOATS), values, strict=True))
    known = {"cached_input_tokens": "cached_input_n", "saved_batch_usd": "saved_batch_n",
             "saved_cache_usd": "saved_cache_n"}
    return CostSums.of_row(row["items"], {name: None if name in known and not row[known[name]] else row[name]
                                          for name in COST_COLUMNS})


def _cost_parts(query: _Query, column: str | None, day: bool = False) -> Iterator[tuple[Any, ...]]:
    """(profile, the `column` value (None without), [day,] CostSums) parts of the selection's cost: summary_cost
    grouped by them for the whole hours, the verdict rows for the cut hours. `day`: also by UTC day
    (days since 1970-01-01)."""
    t = summary_cost
    dims: list[ColumnElement[Any]] = [t.c.profile, *([t.c[column]] if column is not None else [])]
    if day:
        dims.append(t.c.hour // literal_column(str(HOURS_PER_DAY)))
    if not (query.time.lo == 0 and query.time.hi == 0):  # an empty range
        statement = (select(*dims, _COST_SUMS).select_from(query.summary_from(t))
                     .where(*query.summary_filter(t, "")).group_by(*dims))
        for row in query.conn.execute(statement):
            yield (row[0], row[1] if column is not None else None, *([int(row[len(dims) - 1])] if day else []),
                   _cost_of_summary(row[len(dims):]))
    verdict_dims: list[Any] = [V.profile, *([getattr(V, column)] if column is not None else [])]
    sums = [func.count(), *(func.sum(getattr(V, name)) for name in COST_COLUMNS)]
    for since, until in query.time.partial:
        rows = query.conn.execute(select(*verdict_dims, *sums).where(*query.verdict_filter(since, until))
                                  .group_by(*verdict_dims))
        for row in rows:
            n = len(verdict_dims)
            part = CostSums.of_row(row[n], dict(zip(COST_COLUMNS, row[n + 1:], strict=True)))
            yield (row[0], row[1] if column is not None else None,
                   *([hour_of(since) // HOURS_PER_DAY] if day else []), part)


# ---------------------------------------------------------------- entry points

def overflowed(conn: Connection, selection: Selection, key: str) -> bool:
    """Whether some job of the selection has verdicts not summarized under this metadata key."""
    o = summary_overflow
    query = select(o.c.job_id).select_from(o.join(Job, col(Job.id) == o.c.job_id)).where(o.c.group_key == key)
    if selection.owner is not None:
        query = query.where(col(Job.owner) == selection.owner)
    if selection.job_id is not None:
        query = query.where(o.c.job_id == selection.job_id)
    return conn.execute(query.limit(1)).first() is not None


def report(
    engine: Engine,
    selection: Selection,
    group_by: str | None = None,
    builtin_groups: bool = False,
    threshold: float = 0.8,
    hitl: float = 0.2,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The build_report document of the selected verdicts, from the summaries (without
    coverage_auc); None when group_by needs the verdicts themselves (see the module docstring).
    `builtin_groups`: group_by "profile", "model" and "job" group by those columns."""
    grouping = Grouping.of(group_by, builtin_groups)
    with engine.connect() as conn:
        if grouping.key is not None and (summaries.never_summarized(grouping.key)
                                         or overflowed(conn, selection, grouping.key)):
            return None
        query = _Query(conn, selection, grouping, risk=target_accuracy is not None, threshold=threshold)
        groups, models = query.counts()
        if grid_index(threshold) is None:
            for name, split in query.splits(threshold, groups).items():
                groups[name].split = split
        total = groups.pop(None)
        by_group = {name: counts for name, counts in groups.items() if name is not None}
        out = report_from_counts(
            total, query.resolve, models, by_group=by_group if group_by is not None else None,
            group_by=group_by,
            threshold=threshold, hitl=hitl, target_accuracy=target_accuracy, delta=delta,
            bootstrap_resamples=bootstrap_resamples, seed=seed)
        out["cost"], group_costs = cost_sections(query)
        for name, section in group_costs.items():
            if name in out.get("by_group", {}):
                out["by_group"][name]["cost"] = section
        return out


# ---------------------------------------------------------------- per UTC day and judge

HOURS_PER_DAY = 24
Judge = tuple[str, str]
"""(profile, model) of a verdict: a line of the dashboard's charts."""


@dataclass
class Day:
    """One UTC day of a selection, clipped to its since/until: Counts and cost sums per judge."""

    start: datetime  # midnight UTC
    since: datetime  # max(start, the selection's since)
    until: datetime  # min(start + 1 day, the selection's until)
    judges: dict[Judge, Counts] = field(default_factory=dict)
    costs: dict[Judge, CostSums] = field(default_factory=dict)


class _JudgeQuery(_Query):
    """A _Query whose sets are judges: a verdict row's set is its [profile, model] as JSON text
    (unambiguous whatever the names hold), so `_verdict_counts` groups the cut hours by judge."""

    def verdict_dim(self) -> ColumnElement[Any] | None:
        if self._dim is None:
            if self.conn.dialect.name == "postgresql":
                self._dim = cast(func.jsonb_build_array(col(V.profile), col(V.model)), Text)
            else:
                self._dim = func.json_array(col(V.profile), col(V.model))
        return self._dim


def _verdict_day(conn: Connection) -> ColumnElement[str]:
    """A verdict row's UTC day as YYYY-MM-DD text (SQLite keeps created_at as UTC text)."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone(_constant("UTC"), col(V.created_at)), _constant("YYYY-MM-DD"))
    return func.substr(col(V.created_at), literal_column("1"), literal_column("10"))


def _day_start(day: int) -> datetime:
    return hour_start(day * HOURS_PER_DAY)


def days(engine: Engine, selection: Selection, threshold: float = 0.8, max_days: int = 62) -> list[Day]:
    """The selection's verdicts per UTC day and judge, oldest day first: every day from the first
    to the last (at most the last `max_days`) with a verdict of the selection, or from since to
    until when given, each clipped to since/until; every judge of those days in every day (empty
    Counts where it has none). Each day's Counts equal those of the selection narrowed to that
    day's [since, until): the whole hours in one query over summary_main grouped by day and judge,
    the cut hours at since and until from the verdict rows (`_verdict_counts`), the cost sums in
    one query over the verdict rows grouped by day and judge. No HITL or risk counts (a day's
    `hitl` and `risk_control` need a report of their own) and no off-grid split: `threshold` must
    be on the 0.01 grid."""
    if grid_index(threshold) is None:
        raise ValueError(f"threshold {threshold} is not on the 0.01 grid")
    with engine.connect() as conn:
        query = _JudgeQuery(conn, selection, Grouping(), threshold=threshold)
        counts = _daily_summary_counts(query)
        for since, until in query.time.partial:
            day = hour_of(since) // HOURS_PER_DAY
            for name, part in query._verdict_counts(since, until, set()).items():
                judge = _judge_of(name)
                counts.setdefault((day, *judge), Counts()).add(part)
        span = _day_span(selection, {key[0] for key in counts}, max_days)
        if span is None:
            return []
        first, last = span
        out = []
        for day in range(first, last + 1):
            start = _day_start(day)
            since = start if selection.since is None else max(start, selection.since)
            until = _day_start(day + 1) if selection.until is None else min(_day_start(day + 1), selection.until)
            out.append(Day(start, since, until))
        judges = sorted({(p, m) for d, p, m in counts if first <= d <= last})
        for entry in out:
            entry.judges = {judge: Counts() for judge in judges}
        for (day, profile, model), part in counts.items():
            if first <= day <= last:
                out[day - first].judges[(profile, model)] = part
        _add_daily_costs(query, out, first)
        return out


def _judge_of(name: str | None) -> Judge:
    profile, model = json.loads(name or "[]")
    return str(profile), str(model)


def _day_span(selection: Selection, seen: set[int], max_days: int) -> tuple[int, int] | None:
    """First and last day: since's and until's when given, else the first and last seen; the last
    `max_days` of them."""
    first = hour_of(selection.since) // HOURS_PER_DAY if selection.since is not None else min(seen, default=None)
    last = (hour_of(selection.until - timedelta(microseconds=1)) // HOURS_PER_DAY if selection.until is not None
            else max(seen, default=None))
    if first is None or last is None or first > last:
        return None
    return max(first, last - max_days + 1), last


def _daily_summary_counts(query: _JudgeQuery) -> dict[tuple[int, str, str], Counts]:
    """{(day, profile, model): Counts} of the selection's whole hours: summary_main's hourly rows of
    all verdicts (group_key ""), summed by day and judge in one query."""
    t = summary_main
    day = t.c.hour // literal_column(str(HOURS_PER_DAY))  # hours >= 0: integer division floors
    fields, sums = _main_fields(query.threshold)
    where = [t.c.group_key == "", t.c.hour != ALL_HOURS, *query._filter_jobs(t), *query._filter_hours(t)]
    if query.time.lo == 0 and query.time.hi == 0:  # an empty range
        return {}
    statement = (select(day, t.c.profile, t.c.model, sums).select_from(query.summary_from(t)).where(*where)
                 .group_by(day, t.c.profile, t.c.model))
    out: dict[tuple[int, str, str], Counts] = {}
    for values in query.conn.execute(statement):
        counts = out.setdefault((int(values[0]), values[1], values[2]), Counts())
        counts.add_fields(fields, values[3:])
    return out


def _add_daily_costs(query: _JudgeQuery, days: list[Day], first: int) -> None:
    """Each day's cost sums per judge (`_cost_parts` by day, profile and model: summary_cost for
    the whole hours, the verdict rows for the cut ones)."""
    for profile, model, day, part in _cost_parts(query, "model", day=True):
        if first <= day < first + len(days):
            entry = days[day - first]
            entry.costs[(profile, model)] = entry.costs.get((profile, model), CostSums()) + part


def per_day(engine: Engine, selection: Selection, threshold: float = 0.8, bootstrap_resamples: int = 1000,
            seed: int = 0, max_days: int = 62) -> list[dict[str, Any]]:
    """The `per_day` list of /v1/stats/agreement: for each UTC day of `days`, {day, since, until}
    and the statistics of that day's verdicts (calibration.from_counts.statistics_from_counts:
    those of the report but `hitl` and `risk_control`) with their `cost`, and `by_judge`, the same
    per (profile, model). Each equals the report of the selection narrowed to that day's since and
    until (and judge) on every key it has."""
    from calibration.from_counts import json_safe, statistics_from_counts

    def statistics(counts: Counts, costs: Mapping[str, CostSums]) -> dict[str, Any]:
        out = statistics_from_counts(counts, threshold=threshold, hitl=None,
                                     bootstrap_resamples=bootstrap_resamples, seed=seed)
        out["cost"] = cost_section(costs)
        return out

    entries = []
    for day in days(engine, selection, threshold, max_days):
        total = Counts()
        by_profile: dict[str, CostSums] = {}
        by_judge = []
        for (profile, model), counts in day.judges.items():
            total.add(counts)
            cost = day.costs.get((profile, model))
            if cost is not None:  # a cost section names only the profiles with verdicts
                by_profile[profile] = by_profile.get(profile, CostSums()) + cost
            by_judge.append({"profile": profile, "model": model,
                             **statistics(counts, {} if cost is None else {profile: cost})})
        entries.append({"day": day.start.date().isoformat(), "since": day.since.isoformat(),
                        "until": day.until.isoformat(), **statistics(total, by_profile), "by_judge": by_judge})
    out: list[dict[str, Any]] = json_safe(entries)
    return out


def metadata_keys(engine: Engine, owner: str, jobs: int = 1000) -> list[str]:
    """The metadata keys of the owner's newest `jobs` jobs (their summary plans name every key
    their items carry), for a dashboard's group_by choices."""
    query = (select(col(Job.summary_keys)).where(col(Job.owner) == owner, col(Job.summary_keys).is_not(None))
             .order_by(col(Job.created_at).desc()).limit(jobs))
    keys: set[str] = set()
    with engine.connect() as conn:
        for plan in conn.execute(query).scalars():
            keys.update(json.loads(plan or "{}"))
    return sorted(keys)
