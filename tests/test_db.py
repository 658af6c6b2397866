"""The database layer: migrations from several processes at once, and SQLite writers taking turns."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from sqlalchemy import text

from store.db import create_db_engine, migrate, transaction


def _migrate(url: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        migrate(create_db_engine(url))
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc)[:300])


def test_processes_migrating_a_fresh_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """API and workers start together on a new machine: every one of them must come up."""
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        url = f"sqlite:///{tmp_path}/fresh-{round_}.sqlite"
        results = context.Queue()
        processes = [context.Process(target=_migrate, args=(url, results)) for _ in range(4)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert outcomes == ["ok"] * 4, outcomes


def test_sqlite_writers_of_one_process_take_turns(tmp_path: Path) -> None:
    """Read-then-write transactions from 8 threads: without turns, two readers upgrading to
    writers deadlock and SQLite fails one at once (\"database is locked\")."""
    engine = create_db_engine(f"sqlite:///{tmp_path}/w.sqlite")
    with transaction(engine) as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    inside = []

    def bump() -> None:
        for _ in range(50):
            with transaction(engine) as conn:
                inside.append(1)
                assert len(inside) == 1  # one writer at a time
                n = conn.execute(text("SELECT n FROM counter")).scalar_one()
                conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
                inside.pop()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 400  # no lost update
    engine.dispose()


def test_pending_items_are_the_batch_items_without_a_verdict(tmp_path: Path) -> None:
    import random

    from judge.profiles import JudgeProfile
    from store import repo
    from store.db import get_engine
    from tests.test_stats_sql import make_items, random_verdict

    engine = get_engine(f"sqlite:///{tmp_path}/p.sqlite")
    job = repo.create_job(engine, "owner", make_items(random.Random(2), 40),
                          JudgeProfile(name="persona-certainty", provider="openai", model="m")).job
    items = repo.job_items(engine, job.id, 0, 40)
    judged = [(p, random_verdict(random.Random(p), it, "persona-certainty", "m")) for p, it in items if p % 3 == 0]
    repo.record_verdicts(engine, job.id, judged)
    pending = repo.pending_items(engine, job.id, 8, 32)
    assert [p for p, _ in pending] == [p for p in range(8, 32) if p % 3 != 0]
    assert [it.id for _, it in pending] == [it.id for p, it in items if 8 <= p < 32 and p % 3 != 0]
