"""The database engine: SQLite (WAL) by default, PostgreSQL via DATABASE_URL; Alembic migrations."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

if TYPE_CHECKING:  # PostgreSQL's driver is the `postgres` extra: imported where used
    import psycopg
    from psycopg.rows import TupleRow
from sqlmodel import create_engine

from judge.paths import user_data_dir
from judge.private import private_dir, private_file, private_sqlite
from judge.settings import settings

MIGRATIONS = Path(__file__).parent / "migrations"
_lock = threading.Lock()


def database_url() -> str:
    secret = settings().database_url
    url = secret.get_secret_value() if secret is not None else None
    if url:
        # SQLAlchemy wants an explicit driver for psycopg 3.
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url
    path = private_dir(user_data_dir()) / "pjudge.sqlite"
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str | None = None) -> Engine:
    url = url or database_url()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        if engine.url.database and engine.url.database != ":memory:" and not engine.url.database.startswith("file:"):
            private_sqlite(Path(engine.url.database))  # before SQLite makes it (and its WAL) 0644
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_writers_lock = threading.Lock()  # not _lock: a migration waiting on another process holds that
_sqlite_writers: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()` for a write. On SQLite the writers of this process first take turns on a
    lock: SQLite admits one writer at a time and its busy handler makes the others sleep-poll
    (1 ms, then up to 100 ms per try), which leaves a worker's threads idle; a lock hands over at
    once. Other processes still wait in the busy handler."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with _writers_lock:
        writer = _sqlite_writers.get(engine)
        if writer is None:
            writer = _sqlite_writers[engine] = threading.RLock()
    with writer, engine.begin() as conn:
        yield conn


Bind = Engine | Connection
"""What the queries take: a Connection (the caller owns the transaction) or an Engine (the query
opens its own)."""


@contextmanager
def reading(bind: Bind) -> Iterator[Connection]:
    """The connection itself, or a new one of the engine's for the block."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as conn:
        yield conn


@contextmanager
def writing(bind: Bind) -> Iterator[Connection]:
    """The connection itself (its transaction is the caller's), or `transaction(engine)`."""
    if isinstance(bind, Connection):
        yield bind
        return
    with transaction(bind) as conn:
        yield conn


def database_errors() -> tuple[type[Exception], ...]:
    """The exceptions of a failed database statement: SQLAlchemy's wrapper, and psycopg's own for
    the statements that bypass SQLAlchemy (store.bulk, one_round_trip)."""
    try:
        import psycopg
    except ImportError:
        return (DBAPIError,)
    return (DBAPIError, psycopg.Error)


@contextmanager
def one_round_trip(conn: Connection) -> Iterator[psycopg.Connection[TupleRow]]:
    """`conn`'s psycopg connection (PostgreSQL only) in pipeline mode: the statements that cursors
    run on it in the block go to the server together and are answered together when the block
    ends, N statements for the price of one round trip. Errors surface at the end of the block."""
    driver = conn.connection.driver_connection  # psycopg's own connection (typed Any by SQLAlchemy)
    if driver is None:  # invalidated
        raise RuntimeError("the database connection is closed")
    with driver.pipeline():
        yield driver


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest revision, or the given one (idempotent; safe from several
    processes)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with _lock, _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Serialize concurrent migrators (API and workers starting together).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727272)")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialize migrators of one SQLite file across processes (API and worker starting together
    on a fresh file would both create the tables): SQLite opens no transaction for DDL, so the
    database's own lock does not cover it."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    try:
        import fcntl

        posix = True
    except ImportError:  # not POSIX: one process at a time is the user's to arrange
        posix = False
    if not database or database == ":memory:" or not posix:
        yield
        return

    with open(private_file(Path(f"{database}.migrate-lock")), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_engines: dict[str, Engine] = {}


def get_engine(url: str | None = None, run_migrations: bool = True) -> Engine:
    """One engine per URL per process, migrated on first use."""
    url = url or database_url()
    with _lock:
        engine = _engines.get(url)
    if engine is None:
        engine = create_db_engine(url)
        if run_migrations:
            migrate(engine)
        with _lock:
            _engines.setdefault(url, engine)
            engine = _engines[url]
    return engine
