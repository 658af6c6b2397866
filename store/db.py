"""The database engine: SQLite (WAL) by default, PostgreSQL via DATABASE_URL; Alembic migrations."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from judge.paths import user_data_dir

MIGRATIONS = Path(__file__).parent / "migrations"
_lock = threading.Lock()


def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        # SQLAlchemy wants an explicit driver for psycopg 3.
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url
    path = user_data_dir() / "pjudge.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
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
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest revision, or the given one (idempotent; safe from several
    processes)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with _lock, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Serialize concurrent migrators (API and workers starting together).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727272)")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


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
