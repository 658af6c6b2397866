"""Data the service keeps on disk is owner-only (0600 files, 0700 folders) whatever the umask, and
the embedded Redis comes back on its own socket, with its data, when its server dies."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from judge.paths import cache_path, user_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: files 0644, folders 0755
    yield
    os.umask(old)


@pytest.fixture
def embedded_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded Redis of this test's PJUDGE_HOME, stopped after."""
    from worker import broker

    monkeypatch.setattr(broker, "SUPERVISE_INTERVAL", 0.2)
    monkeypatch.setattr(broker, "_embedded", None)
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield user_data_dir() / "redis"
    broker.stop_embedded()


def test_database_wal_cache_and_redis_files_are_owner_only(loose_umask: None, embedded_redis: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from judge.cache import SqliteCallCache
    from store.db import create_db_engine, database_url, migrate
    from worker.broker import embedded_redis_url

    monkeypatch.delenv("DATABASE_URL", raising=False)
    engine = create_db_engine(database_url())
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO api_keys (name, key_hash, prefix, created_at) "
                          "VALUES ('x', 'h', 'p', '2026-01-01')"))
    home = user_data_dir()
    database = home / "pjudge.sqlite"
    wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
    assert wal.exists() and shm.exists()
    cache = SqliteCallCache(cache_path())
    cache._connect().execute("SELECT 1")
    url = embedded_redis_url()
    import redis

    client = redis.Redis(unix_socket_path=url[len("redis+socket://"):])
    client.set("k", "v")
    client.save()
    assert mode(home) == 0o700 and mode(embedded_redis) == 0o700
    files = [database, wal, shm, Path(f"{database}.migrate-lock"), cache_path(),
             Path(f"{cache_path()}-wal"), embedded_redis / "broker.rdb"]
    files += [p for p in embedded_redis.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert len(files) > 8
    for path in files:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    for folder in [p for p in embedded_redis.rglob("*") if p.is_dir()]:
        assert mode(folder) == 0o700, folder
    socket_folder = Path(url[len("redis+socket://"):]).parent
    assert mode(socket_folder) == 0o700
    engine.dispose()


def test_a_file_left_world_readable_is_tightened_when_opened_again(loose_umask: None, tmp_path: Path) -> None:
    from store.db import create_db_engine

    database = tmp_path / "old.sqlite"
    database.touch(0o644)
    Path(f"{database}-wal").touch(0o644)
    create_db_engine(f"sqlite:///{database}").dispose()
    assert mode(database) == 0o600 and mode(Path(f"{database}-wal")) == 0o600


def test_the_embedded_redis_is_restarted_on_its_socket_with_its_data(embedded_redis: Path) -> None:
    import redis

    from worker.broker import embedded_redis_url

    url = embedded_redis_url()
    socket_file = url[len("redis+socket://"):]
    client = redis.Redis(unix_socket_path=socket_file)
    client.rpush("celery", "task-1")
    time.sleep(1.5)  # appendfsync everysec
    pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        try:
            new_pid = int(client.info("server")["process_id"])
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the embedded Redis did not come back"
            time.sleep(0.2)
    assert new_pid != pid
    assert client.lrange("celery", 0, -1) == [b"task-1"]  # the queue survived, same socket, same data
    assert embedded_redis_url() == url
