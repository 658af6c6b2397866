"""Many-row writes that stay cheap on PostgreSQL.

SQLAlchemy's many-row INSERT renders one long statement with %(name)s parameters per row, and
psycopg re-parses any statement that long on every execution (it caches only short ones): at
0 ms provider latency that parsing was the largest single CPU cost of a worker's batch. Here
PostgreSQL gets the statement with native $n parameters, built once per shape, through a psycopg
RawCursor, which sends it as it is. SQLite (in process, cheap) keeps SQLAlchemy's executemany.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Insert, Table, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection

T = TypeVar("T")

POSTGRES_MAX_PARAMETERS = 65535  # the protocol's limit per statement
# Values of one IN list built from data (ids, sets): far under the limit, a statement per slice.
MAX_IN_LIST = 1000


def in_slices(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` a slice of at most MAX_IN_LIST at a time, for `column.in_(slice)` statements: one
    list of every id would pass PostgreSQL's bound parameters with more than 65,535."""
    for start in range(0, len(values), MAX_IN_LIST):
        yield values[start:start + MAX_IN_LIST]


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                ignore_conflicts: bool = False, returning: str | None = None) -> list[Any]:
    """INSERT `rows` (dicts with the same keys) into `table` in `conn`'s transaction.

    `ignore_conflicts`: ON CONFLICT DO NOTHING. `returning`: a column whose values come back for
    the rows really inserted (in no particular order); otherwise returns [].
    """
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        statement: Insert = sqlite.insert(table).on_conflict_do_nothing() if ignore_conflicts else insert(table)
        if returning is None:
            conn.execute(statement, list(rows))
            return []
        return list(conn.execute(statement.returning(table.c[returning]), list(rows)).scalars())

    import psycopg

    names = tuple(rows[0])
    head, tail, processors = _postgres_insert(conn, table, names, ignore_conflicts, returning)
    values = [[row[name] for name in names] for row in rows]
    for index, process in processors:
        for row in values:
            row[index] = process(row[index])
    page = POSTGRES_MAX_PARAMETERS // len(names)
    found: list[Any] = []
    connection = conn.connection.driver_connection  # psycopg's own connection
    if not isinstance(connection, psycopg.Connection):
        raise TypeError(f"a PostgreSQL connection through psycopg expected, not {type(connection).__name__}")
    with psycopg.RawCursor(connection) as cursor:
        for start in range(0, len(values), page):
            chunk = values[start:start + page]
            cursor.execute(f"{head} VALUES {placeholders(len(chunk), len(names))}{tail}",
                           [value for row in chunk for value in row])
            if returning is not None:
                found += [row[0] for row in cursor.fetchall()]
    return found


# A column's bind conversion (SQLAlchemy's bind processor: a Python value to the driver's).
Processor = Callable[[Any], Any]
InsertKey = tuple[str, tuple[str, ...], bool, str | None]  # table, columns, ignore_conflicts, returning
_inserts: dict[InsertKey, tuple[str, str, list[tuple[int, Processor]]]] = {}


def _postgres_insert(conn: Connection, table: Table, names: tuple[str, ...], ignore_conflicts: bool,
                     returning: str | None) -> tuple[str, str, list[tuple[int, Processor]]]:
    """The statement's text around its VALUES, and the columns' bind conversions (e.g. aware
    datetimes to UTC) that SQLAlchemy would have applied."""
    key = (table.name, names, ignore_conflicts, returning)
    if key not in _inserts:
        quote = conn.dialect.identifier_preparer.quote
        processors: list[tuple[int, Processor]] = []
        for index, name in enumerate(names):
            column_type = table.c[name].type.dialect_impl(conn.dialect)
            process = column_type.bind_processor(conn.dialect)
            if process is not None:
                processors.append((index, process))
        head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)})"
        tail = (" ON CONFLICT DO NOTHING" if ignore_conflicts else "") + (
            f" RETURNING {quote(returning)}" if returning is not None else "")
        _inserts[key] = (head, tail, processors)
    return _inserts[key]


def placeholders(rows: int, columns: int) -> str:
    """($1, ..., $columns), ($columns + 1, ...), ... for `rows` rows; batch-sized shapes are kept
    (a worker repeats them), a job's pages of thousands of rows are not."""
    if rows * columns <= 4096:
        return _batch_placeholders(rows, columns)
    return _placeholder_text(rows, columns)


def _placeholder_text(rows: int, columns: int) -> str:
    return ", ".join("(" + ", ".join(f"${r * columns + c}" for c in range(1, columns + 1)) + ")"
                     for r in range(rows))


_batch_placeholders = functools.lru_cache(maxsize=256)(_placeholder_text)
