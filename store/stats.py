"""The read side of the verdict summaries: the SPEC 4 report of a selection of verdicts (one job,
or an owner's jobs filtered by profile, model and time), summed in SQL, never by a Python loop
over the verdicts.

The summaries (store.summaries) are kept per hour of created_at. A time filter takes the whole
hours inside [since, until) from the summaries and the verdicts of the cut hours at either end from
the verdict table itself (aggregate queries over those rows only), so since and until are exact to
the microsecond.

Two steps need more than the summaries, both resolved exactly:
- a certainty threshold off the 0.01 grid: the split is one aggregate query over the verdict rows of
  the selection (a scan, so slower; the default 0.8 and the coverage curve are on the grid);
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Table, and_, case, cast, func, literal, literal_column, or_, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from calibration.from_counts import (
    CODES,
    ECE_FIELDS,
    FLOAT_FIELDS,
    MAIN_FIELDS,
    BpdeKey,
    Counts,
    Cut,
    bpde_key,
    certainty_fields,
    grid_index,
    report_from_counts,
)
from calibration.report import MISSING_GROUP
from calibration.table import DECIMALS
from store import summaries
from store.models import (
    HITL_CELLS,
    Job,
    VerdictRow,
    summary_bpde,
    summary_bpde_chunk,
    summary_lambda,
    summary_main,
    summary_overflow,
)
from store.summaries import ALL_HOURS, SECONDS_PER_HOUR, hour_of, hour_start

V = VerdictRow
# group_by values that group by a column of the verdicts rather than a metadata key
BUILTIN_GROUPS = {"profile": "profile", "model": "model", "job": "job_id"}
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

def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _is(column: Any, value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value  # type: ignore[no-any-return]


def _constant(value: Any) -> ColumnElement[Any]:
    """A constant rendered into the SQL text: PostgreSQL accepts a GROUP BY expression only if it is
    the selected one token for token, and two bound parameters are two different tokens."""
    return literal(value, literal_execute=True)


def _group_value(conn: Connection, key: str, grouped: bool) -> ColumnElement[str]:
    """The verdict's group name under a metadata key, from group_json (which holds exactly the keys
    it is summarized under), "(missing)" where it has none. grouped: for GROUP BY, with the
    constants in the SQL text (bound parameters cost a rewrite of the statement per execution)."""
    constant = _constant if grouped else literal
    if conn.dialect.name == "postgresql":
        value = func.jsonb_extract_path_text(cast(V.group_json, JSONB), constant(key))
    else:  # json_each matches the key as a value: no JSON path quoting to get wrong
        each = func.json_each(V.group_json).table_valued("key", "value")
        value = select(each.c.value).where(each.c.key == constant(key)).scalar_subquery()
    return func.coalesce(value, constant(MISSING_GROUP))


def _chunk_of() -> ColumnElement[int]:
    """A verdict's HITL chunk (store.summaries.CHUNK read at call time: tests shrink it)."""
    return V.position // literal_column(str(summaries.CHUNK))


_LABELLED = V.human_label.is_not(None)
_HAS_WINNER = V.winner.in_(("A", "B"))
_DECIDED = and_(_LABELLED, _HAS_WINNER)
_CORRECT = and_(_LABELLED, V.winner == V.human_label)
_IN_CERTAINTY = and_(_HAS_WINNER, V.stat_certainty_bin.is_not(None))
_IN_CONFIDENCE = and_(_DECIDED, V.stat_lambda_bin.is_not(None))

# Aggregates over verdict rows (the cut hours), grouped by winner and label: the per-row work
# stays a few plain sums (SQLite evaluates every expression of every row), and
# store.summaries.outcome_fields turns each (winner, label) group into the summary fields.
VERDICT_OUTCOME = [
    func.count(), _count(V.stat_position >= 1), _count(V.stat_position == 2), func.sum(V.calls_first),
    func.sum(V.calls_second), func.sum(V.calls_tie), _count(V.stat_longer == 1), _count(V.stat_longer == 2),
    _count(V.abstained.is_(True)), func.count(V.stat_p_a), func.sum((V.stat_p_a - 1.0) * (V.stat_p_a - 1.0)),
    func.sum(V.stat_p_a * V.stat_p_a),
]
_BPDE_GROUP = [case((V.bpde.is_(None), literal_column("1")), else_=literal_column("0")),
               func.coalesce(V.bpde, literal_column("0.0"))]


def _sums(table: Table, names: Sequence[str]) -> ColumnElement[Any]:
    """SUM of each named column as one prebuilt SQL fragment (hundreds of columns: building them as
    expressions per request cost more than the query)."""
    return literal_column(", ".join(f"SUM({table.name}.{name})" for name in names))


@functools.lru_cache(maxsize=128)
def _main_fields(threshold: float) -> tuple[tuple[str, ...], ColumnElement[Any]]:
    """The summary_main fields a report at this threshold reads, and their SUMs."""
    fields = (*MAIN_FIELDS, *ECE_FIELDS, *certainty_fields(threshold), *FLOAT_FIELDS)
    return fields, _sums(summary_main, fields)


LAMBDA_SUMS = _sums(summary_lambda, ("n_decided", "n_errors"))
CELL_SUMS = {table.name: _sums(table, HITL_CELLS) for table in (summary_bpde, summary_bpde_chunk)}


# Built once: a join costs most of a millisecond to construct.
_JOINED = {table.name: table.join(Job, Job.id == table.c.job_id)
           for table in (summary_main, summary_lambda, summary_bpde, summary_bpde_chunk)}


NULL = literal_column("NULL")  # a placeholder column, left out of GROUP BY
NO_BIN = literal_column("-2")  # a missing bin, as a constant in the SQL text (GROUP BY on PostgreSQL)


def _counts_of(groups: dict[str | None, Counts], name: str | None) -> Counts:
    """groups[name], made when missing (not setdefault: a Counts holds a 5,001-row risk table)."""
    counts = groups.get(name)
    if counts is None:
        counts = groups[name] = Counts()
    return counts


def _ints(values: Iterable[Any]) -> np.ndarray:
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
    _partial_bpde: dict[tuple[datetime, datetime], list[tuple[Any, ...]]] = field(init=False, default_factory=dict)

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
            where.append(Job.owner == s.owner)
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

    def summary_from(self, table: Table) -> Any:
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
            where.append(select(Job.id).where(Job.id == V.job_id, Job.owner == s.owner).exists())
        if s.job_id is not None:
            where.append(V.job_id == s.job_id)
        if s.profile is not None:
            where.append(V.profile == s.profile)
        if s.model is not None:
            where.append(V.model == s.model)
        if since is not None:
            where.append(V.created_at >= since)
        if until is not None:
            where.append(V.created_at < until)
        return where

    def owned(self, job_id: str) -> bool:
        """Whether a job is the selection's owner's (always, without an owner filter)."""
        if self.selection.owner is None:
            return True
        if self._owned is None:
            self._owned = set(self.conn.execute(select(Job.id).where(Job.owner == self.selection.owner)).scalars())
        return job_id in self._owned

    def verdict_dim(self) -> ColumnElement[Any] | None:
        """The verdict rows' group name expression (None without grouping)."""
        g = self.grouping
        if g.column is not None:
            return getattr(V, g.column)  # type: ignore[no-any-return]
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
        dim = self.verdict_dim()
        for since, until in self.time.partial:
            for name, counts in self._verdict_counts(since, until, dim, models).items():
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
        out: dict[str | None, Counts] = {}

        def select_by(table: Table, *columns: Any) -> tuple[Any, int]:
            dims = [table.c[dim]] if dim is not None else []
            query = (select(*dims, *columns).select_from(self.summary_from(table))
                     .where(*self.summary_filter(table, group_key)))
            return query, len(dims)

        def get(row: Any, n: int) -> Counts:
            return _counts_of(out, row[0] if n else None)

        t = summary_main
        fields, sums = _main_fields(self.threshold)
        query, n = select_by(t, t.c.model, sums)
        for row in self.conn.execute(query.group_by(*_row_dims(t, dim), t.c.model)):
            models.add(row[n])
            get(row, n).add_fields(fields, row[n + 1:])
        if self.risk:
            t = summary_lambda
            query, n = select_by(t, t.c.lambda_bin, LAMBDA_SUMS)
            for row in self.conn.execute(query.group_by(*_row_dims(t, dim), t.c.lambda_bin)):
                get(row, n).risk[row[n] + 1] += (int(row[n + 1]), int(row[n + 2]))
        t = summary_bpde
        query, n = select_by(t, t.c.bpde_null, t.c.bpde, CELL_SUMS[t.name])
        for row in self.conn.execute(query.group_by(*_row_dims(t, dim), t.c.bpde_null, t.c.bpde)):
            get(row, n).add_hitl(bpde_key(None if row[n] else row[n + 1]), row[n + 2:])
        return out

    def _verdict_counts(self, since: datetime | None, until: datetime | None, dim: ColumnElement[Any] | None,
                        models: set[str]) -> dict[str | None, Counts]:
        """The same sums straight from the verdict rows created in [since, until) (grouped by job
        too, to keep the owner's)."""
        out: dict[str | None, Counts] = {}
        dims = [V.job_id, *([dim] if dim is not None else [])]
        n = len(dims)
        where = self.verdict_filter(since, until, owner=False)

        def rows(*columns: Any, condition: Any = None, by: Sequence[Any] = ()) -> Iterable[Any]:
            query = select(*dims, *by, *columns).where(*where)
            if condition is not None:
                query = query.where(condition)
            return (row for row in self.conn.execute(query.group_by(*dims, *by)) if self.owned(row[0]))

        def get(row: Any) -> Counts:
            return _counts_of(out, row[1] if n > 1 else None)

        for row in rows(*VERDICT_OUTCOME, by=[V.model, V.winner, V.human_label]):
            models.add(row[n])
            fields, brier = summaries.outcome_fields(*row[n + 1:n + 3], *(int(v or 0) for v in row[n + 3:n + 13]),
                                                     float(row[n + 13] or 0.0), float(row[n + 14] or 0.0))
            get(row).add_main(fields, brier)
        # The certainty histogram and the reliability bins in one pass (their bins go together).
        bins = [func.coalesce(V.stat_certainty_bin, NO_BIN), func.coalesce(V.stat_ece_bin, NO_BIN)]
        for row in rows(_count(_IN_CERTAINTY), _count(and_(_IN_CERTAINTY, _LABELLED)),
                        _count(and_(_IN_CERTAINTY, _CORRECT)), _count(_IN_CONFIDENCE),
                        _count(and_(_IN_CONFIDENCE, _CORRECT)),
                        func.sum(case((_IN_CONFIDENCE, V.stat_confidence), else_=0.0)),
                        condition=or_(_IN_CERTAINTY, _IN_CONFIDENCE), by=bins):
            counts, (cert_bin, ece_bin) = get(row), row[n:n + 2]
            if row[n + 2]:
                counts.add_certainty_bin(cert_bin, _ints(row[n + 2:n + 5]))
            if row[n + 5]:
                counts.ece[ece_bin] += _ints(row[n + 5:n + 7])
                counts.ece_confidence[ece_bin] += float(row[n + 7])
        if self.risk:
            for row in rows(func.count(), _count(V.winner != V.human_label), condition=_IN_CONFIDENCE,
                            by=[V.stat_lambda_bin]):
                get(row).risk[row[n] + 1] += _ints(row[n + 1:])
        # Labelled verdicts by job, BPDE, winner and label: the BPDE counts here, and kept for the
        # HITL cut's counts per job (`_cut_counts`), which are the same rows.
        by_bpde = self._partial_bpde[(since, until)] = []
        for row in rows(func.count(), condition=_LABELLED, by=[*_BPDE_GROUP, V.winner, V.human_label]):
            job_id, group = row[0], row[1] if n > 1 else None
            null, value, winner, label, count = row[n:n + 5]
            by_bpde.append((job_id, group, null, value, winner, label, count))
            cells = np.zeros(12, dtype=np.int64)
            cells[CODES[winner] * 3 + CODES[label]] = count
            get(row).add_hitl(bpde_key(None if null else value), cells)
        return out

    # -- the certainty split at an off-grid threshold, by group
    def splits(self, threshold: float) -> dict[str | None, tuple[np.ndarray, np.ndarray]]:
        cut = round(threshold, DECIMALS)  # as calibration.certainty.certainty_split
        dim = self.verdict_dim()
        dims = [dim] if dim is not None else []
        high, low = V.stat_certainty >= cut, V.stat_certainty < cut
        sums = [_count(high), _count(and_(high, _LABELLED)), _count(and_(high, _CORRECT)),
                _count(low), _count(and_(low, _LABELLED)), _count(and_(low, _CORRECT))]
        rows = self.conn.execute(
            select(*dims, *sums)
            .where(*self.verdict_filter(self.selection.since, self.selection.until), _HAS_WINNER,
                   V.stat_certainty.is_not(None))
            .group_by(*dims))
        out: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}
        total = (np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
        for row in rows:
            values = _ints(row[len(dims):])
            out[row[0] if dims else None] = (values[:3], values[3:])
            total = (total[0] + values[:3], total[1] + values[3:])
        out[None] = total
        return out

    # -- the HITL cuts
    def resolve(self, cuts: Mapping[str | None, Cut]) -> dict[str | None, np.ndarray]:
        """For each set's cut, the winner x label counts of the first m labelled items with its BPDE
        value in input order: the counts per job find the job the cut ends in (one query for all
        sets), that job's counts per chunk the chunk (one query), then one query per set reads at
        most a chunk of verdict rows."""
        taken = {name: np.zeros((4, 3), dtype=np.int64) for name in cuts}
        by_job = self._cut_counts(summary_bpde, cuts)
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
        by_chunk = self._cut_counts(summary_bpde_chunk, {name: cuts[name] for name in ends},
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

    def _cut_counts(self, table: Table, cuts: Mapping[str | None, Cut],
                    jobs: Mapping[str | None, str] | None = None) -> dict[str | None, dict[Any, np.ndarray]]:
        """{set: {job (or chunk, with `jobs`: the set's job) -> 4 x 3 counts}} of the labelled items
        with each set's cut BPDE value: summaries for the whole hours, verdicts for the cut ones."""
        g = self.grouping
        out: dict[str | None, dict[Any, np.ndarray]] = {name: {} for name in cuts}
        keys = sorted({cut[0] for cut in cuts.values()})

        def add(name: str | None, value: Any, cells: np.ndarray) -> None:
            counts = out[name]
            counts[value] = counts[value] + cells if value in counts else cells

        chunked = jobs is not None
        columns = [table.c.group_key, table.c.group_value, table.c[g.column] if g.column else NULL,
                   table.c.job_id, table.c.chunk if chunked else NULL,
                   table.c.bpde_null, table.c.bpde]
        where = [*self.summary_filter(table, None), table.c.group_key.in_(["", *([g.key] if g.key else [])]),
                 tuple_(table.c.bpde_null, table.c.bpde).in_([(int(null), value) for null, value in keys])]
        if jobs is not None:
            where.append(table.c.job_id.in_(sorted(set(jobs.values()))))
        rows = self.conn.execute(select(*columns, CELL_SUMS[table.name]).select_from(self.summary_from(table))
                                 .where(*where).group_by(*(c for c in columns if c is not NULL)))
        for group_key, group_value, column_value, job_id, chunk, null, value, *cells in rows:
            key = bpde_key(None if null else value)
            for name, (cut_key, _) in cuts.items():
                sign = self._member(name, group_key, group_value, column_value)
                if cut_key == key and sign and (jobs is None or jobs[name] == job_id):
                    add(name, chunk if chunked else job_id, sign * _ints(cells).reshape(4, 3))

        dim = self.verdict_dim()
        bpde = or_(*(V.bpde.is_(None) if null else V.bpde == value for null, value in keys))
        columns = [V.job_id, dim if dim is not None else NULL, _chunk_of(), *_BPDE_GROUP, V.winner, V.human_label]
        for since, until in self.time.partial:
            if chunked:
                # No job filter in SQL: with one, SQLite reads the jobs' verdicts by job instead of
                # the cut hour's by created_at. The rows are grouped by job anyway.
                partial = self.conn.execute(
                    select(*columns, func.count())
                    .where(*self.verdict_filter(since, until, owner=False), _LABELLED, bpde)
                    .group_by(*(c for c in columns if c is not NULL)))
            else:  # by job: the rows `_verdict_counts` read already
                partial = ((job, group, None, null, value, winner, label, n)
                           for job, group, null, value, winner, label, n in self._partial_bpde[(since, until)])
            for job_id, group, chunk, null, value, winner, label, n in partial:
                if not self.owned(job_id):
                    continue
                key = bpde_key(None if null else value)
                cells = np.zeros((4, 3), dtype=np.int64)
                cells[CODES[winner], CODES[label]] = n
                for name, (cut_key, _) in cuts.items():
                    if cut_key == key and (name is None or group == name) and (jobs is None or jobs[name] == job_id):
                        add(name, chunk if chunked else job_id, cells)
        return out

    def _verdict_group(self, group: str | None) -> list[ColumnElement[bool]]:
        """The filter of a set's verdict rows (None: all)."""
        g = self.grouping
        if group is None or (g.column is None and g.key is None):
            return []
        if g.column is not None:
            return [getattr(V, g.column) == group]
        if self._filter_dim is None:
            self._filter_dim = _group_value(self.conn, g.key, grouped=False)  # type: ignore[arg-type]
        return [self._filter_dim == group]

    def _first_in_chunk(self, name: str | None, key: BpdeKey, job_id: str, chunk: int, m: int) -> np.ndarray:
        """The 4 x 3 counts of the set's first m labelled items with this BPDE in a job's chunk."""
        size = summaries.CHUNK
        bpde = V.bpde.is_(None) if key[0] else V.bpde == key[1]
        first = (select(V.winner, V.human_label)
                 .where(V.job_id == job_id, V.position >= chunk * size, V.position < (chunk + 1) * size,
                        *self.verdict_filter(self.selection.since, self.selection.until, owner=False),
                        *self._verdict_group(name), _LABELLED, bpde)
                 .order_by(V.position).limit(m).subquery())
        taken = np.zeros((4, 3), dtype=np.int64)
        for winner, label, n in self.conn.execute(select(first.c.winner, first.c.human_label, func.count())
                                                  .group_by(first.c.winner, first.c.human_label)):
            taken[CODES[winner], CODES[label]] += n
        return taken

    def _job_created(self, job_ids: Iterable[str]) -> dict[str, datetime]:
        """created_at of jobs, which orders the input across jobs (SQLite gives naive UTC)."""
        missing = [j for j in job_ids if j not in self._created]
        if missing:
            for job_id, created in self.conn.execute(select(Job.id, Job.created_at).where(Job.id.in_(missing))):
                self._created[job_id] = created.replace(tzinfo=UTC) if created.tzinfo is None else created
        return self._created


def _row_dims(table: Table, dim: str | None) -> list[Any]:
    return [table.c[dim]] if dim is not None else []


# ---------------------------------------------------------------- entry points

def overflowed(conn: Connection, selection: Selection, key: str) -> bool:
    """Whether some job of the selection has verdicts not summarized under this metadata key."""
    o = summary_overflow
    query = select(o.c.job_id).select_from(o.join(Job, Job.id == o.c.job_id)).where(o.c.group_key == key)
    if selection.owner is not None:
        query = query.where(Job.owner == selection.owner)
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
            splits = query.splits(threshold)
            for name, counts in groups.items():
                counts.split = splits.get(name, (np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64)))
        total = groups.pop(None)
        return report_from_counts(
            total, query.resolve, models, by_group=groups if group_by is not None else None, group_by=group_by,
            threshold=threshold, hitl=hitl, target_accuracy=target_accuracy, delta=delta,
            bootstrap_resamples=bootstrap_resamples, seed=seed)
