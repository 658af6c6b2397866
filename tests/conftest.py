"""Shared fixtures (isolated user data per test, the reference data, the simulated LLM, Redis, the
databases) and the tiers: a test that uses a fixture starting processes is marked `service`, one
on PostgreSQL `database`; `browser` and `slow` are set on the tests themselves (pyproject.toml
registers the markers; `scripts/test --fast` leaves them all out). Shared builders live in tests/support."""

from __future__ import annotations

import gc
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from judge.private import private_sqlite
from judge.settings import reset_settings
from llm_sim.process import SimProcess
from tests.support.cli import SHARED_DATA

if TYPE_CHECKING:
    from tests.support.services import BackgroundDrops, RedisServer, Service


@pytest.fixture(autouse=True)
def default_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt in every test, and the processes a test starts begin with
    SIGINT's default: what a test runs in this process (Celery's platform code, a supervisor's
    handler) can leave its own handler, SIG_IGN or a blocked SIGINT behind, and SIG_IGN and the
    mask are inherited by children, so the tests of Ctrl-C failed after it in a full run."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data directory and call cache, and no real provider key."""
    home = tmp_path / "pjudge-home"
    monkeypatch.setenv("PJUDGE_HOME", str(home))
    monkeypatch.setenv("PJUDGE_CACHE", str(home / "cache.sqlite"))
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "PJUDGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()  # settings are read once per process; each test reads its own environment
    yield home
    reset_settings()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (research-only data kept outside the repo)")
    return SHARED_DATA


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimProcess]]:
    """Start `pjudge llm-sim` processes with the given flags; all are stopped after the test."""
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(*args).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    from tests.support.services import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to the newest revision once per session, checkpointed into its
    one file: migrating takes a few hundred milliseconds, copying the file one."""
    from store.db import create_db_engine, migrate

    path = tmp_path_factory.mktemp("migrated") / "template.sqlite"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def migrated_sqlite(migrated_sqlite_template: Path) -> Callable[[Path], Engine]:
    """`migrated_sqlite(path)`: a fresh copy of the migrated template at `path` (0600, as the
    product makes it), opened with store.db.get_engine; the copy is at the newest revision already,
    so get_engine skips Alembic's check (tens of milliseconds)."""
    from store.db import get_engine

    def copy(path: Path) -> Engine:
        shutil.copyfile(migrated_sqlite_template, private_sqlite(path))
        return get_engine(f"sqlite:///{path}", run_migrations=False)

    return copy


@pytest.fixture(scope="session")
def postgres_drops() -> Iterator[BackgroundDrops]:
    """The session's PostgreSQL test databases are dropped in background threads (a drop waits
    about a second on the server); the session ends when all are gone."""
    from tests.support.services import BackgroundDrops

    drops = BackgroundDrops()
    yield drops
    drops.wait()


@pytest.fixture(scope="session")
def migrated_postgres_template(postgres_drops: BackgroundDrops) -> Iterator[str]:
    """A PostgreSQL database migrated to the newest revision once per session (skips the test
    where PJUDGE_TEST_POSTGRES_URL is unset): each test's database is a copy of it."""
    from store.db import get_engine
    from tests.support.services import create_postgres_database

    url = create_postgres_database()
    get_engine(url).dispose()  # migrates; a template must have no open connection
    yield url
    postgres_drops.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path,
           migrated_sqlite: Callable[[Path], Engine]) -> Iterator[Engine]:
    """A migrated database: SQLite (a copy of the session's migrated template), and PostgreSQL
    (a copy of the session's migrated template database, dropped after in the background) where
    PJUDGE_TEST_POSTGRES_URL is set (skipped otherwise). Both copies are at the newest revision
    already, so get_engine skips Alembic's check."""
    from store.db import get_engine

    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "db.sqlite")
        return
    from tests.support.services import copy_postgres_database

    template: str = request.getfixturevalue("migrated_postgres_template")
    drops: BackgroundDrops = request.getfixturevalue("postgres_drops")
    url = copy_postgres_database(template)
    engine = get_engine(url, run_migrations=False)
    yield engine
    engine.dispose()
    drops.drop(url)


# ---------------------------------------------------------------- the API and the service

@pytest.fixture
def enqueued() -> list[Any]:
    """The jobs the `app` fixture's API enqueued (no worker judges them)."""
    return []


@pytest.fixture
def app(engine: Engine, enqueued: list[Any]) -> Flask:
    """The API in-process on `engine`, with tenants A and B's keys (tests/support/api.py)."""
    from tests.support.api import new_app

    return new_app(engine, enqueued.append)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for a `service` (which migrates it): SQLite, and PostgreSQL (a fresh
    database, dropped after) where PJUDGE_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/service.sqlite"
        return
    from tests.support.services import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def service(tmp_path: Path, database_url: str, redis_server: RedisServer) -> Iterator[Service]:
    """The API and workers as processes on `database_url` (tests/support/services.py `Service`)."""
    from tests.support.services import Service

    svc = Service(tmp_path, database_url, redis_server)
    yield svc
    svc.stop()


@pytest.fixture
def sqlite_service(tmp_path: Path, redis_server: RedisServer) -> Iterator[Service]:
    """A `service` on SQLite only."""
    from tests.support.services import Service

    svc = Service(tmp_path, f"sqlite:///{tmp_path}/service.sqlite", redis_server)
    yield svc
    svc.stop()


# ---------------------------------------------------------------- tiers

# Fixtures that start processes or servers: the simulator, Redis, workers (tests/support/services.py
# `Service`), a hanging endpoint, the embedded Redis (test_private_data.py).
SERVICE_FIXTURES = frozenset({"start_sim", "redis_server", "service", "hanging", "embedded_redis"})
# Fixtures parametrized over the databases: their "postgresql" case needs PostgreSQL.
DATABASE_FIXTURES = frozenset({"engine", "database_url", "unmigrated"})


def _freeze_what_lives() -> None:
    """Collect the garbage, then move what is left (imported modules, session fixtures, caches) out
    of the collector's reach (gc.freeze): a test run keeps a large heap alive, and each full
    collection (pytest's own five at the end included) would otherwise walk all of it again. Only
    what is alive at a test module's boundary is frozen; what the next tests make is collected as
    usual."""
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    _freeze_what_lives()  # the product, its libraries and the test modules, imported by collection
    # Young collections every 10,000 allocations instead of 700 (this process only; the product
    # keeps Python's defaults): thousands of collections fewer in a run of small tests.
    gc.set_threshold(10_000, 10, 10)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    result = yield
    # After a module's last test (its fixtures torn down): what it imported or cached lazily.
    if nextitem is None or nextitem.path != item.path:
        _freeze_what_lives()
    return result


# The files that take longest (seconds of a full run, one process), started first: the full run
# hands whole files to its two processes in collection order (scripts/test, --dist loadfile), so
# a long file left to the end keeps one process busy while the other idles.
LONGEST_FIRST = ("test_service_worker.py", "test_webhooks_service.py", "test_worker_processes.py",
                 "test_cascade_service.py", "test_judge_sim.py", "test_fairness.py", "test_batch_mode.py",
                 "test_reproduction_cascade.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVICE_FIXTURES:
            item.add_marker(pytest.mark.service)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(callspec.params.get(name) == "postgresql" for name in DATABASE_FIXTURES):
            item.add_marker(pytest.mark.database)
