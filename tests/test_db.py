"""The database layer: migrations from several processes at once, and SQLite writers taking turns."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from store.db import create_db_engine, database_errors, migrate, transaction


def _migrate(url: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        migrate(create_db_engine(url))
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc)[:300])


@pytest.mark.slow
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
    from tests.support.random_verdicts import make_items, random_verdict

    engine = get_engine(f"sqlite:///{tmp_path}/p.sqlite")
    job = repo.create_job(engine, "owner", make_items(random.Random(2), 40),
                          JudgeProfile(name="persona-certainty", provider="openai", model="m")).job
    items = repo.job_items(engine, job.id, 0, 40)
    judged = [(p, random_verdict(random.Random(p), it, "persona-certainty", "m")) for p, it in items if p % 3 == 0]
    repo.record_verdicts(engine, job.id, judged)
    pending = repo.pending_items(engine, job.id, 8, 32)
    assert [p for p, _ in pending] == [p for p in range(8, 32) if p % 3 != 0]
    assert [it.id for _, it in pending] == [it.id for p, it in items if 8 <= p < 32 and p % 3 != 0]


def test_insert_many_returns_only_new_rows_pages_past_the_parameter_limit_and_stores_utc(engine: Engine) -> None:
    """store.bulk.insert_many on both databases: ON CONFLICT DO NOTHING RETURNING gives exactly the
    rows inserted, a batch over PostgreSQL's 65,535 parameters goes in pages, and datetimes get the
    column's own conversion (an aware time in another zone reads back as the same instant in UTC)."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import func, select

    from store.bulk import insert_many
    from store.models import CacheEntry
    from store.repo import DbCallCache

    table = CacheEntry.__table__
    paris = timezone(timedelta(hours=1))
    rows = [{"key": f"k{i:05d}", "raw": f"answer {i}", "input_tokens": i, "output_tokens": None,
             "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=paris)} for i in range(14_000)]  # 70k params
    with transaction(engine) as conn:
        first = insert_many(conn, table, rows[:9_000], ignore_conflicts=True, returning="key")
    with transaction(engine) as conn:
        second = insert_many(conn, table, rows, ignore_conflicts=True, returning="key")
    assert sorted(first) == [r["key"] for r in rows[:9_000]]
    assert sorted(second) == [r["key"] for r in rows[9_000:]]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 14_000
        stored = conn.execute(select(CacheEntry.created_at).where(CacheEntry.key == "k00007")).scalar_one()
    assert stored.replace(tzinfo=stored.tzinfo or UTC) == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)
    hit = DbCallCache(engine).get("k13999")
    assert hit is not None and (hit.text, hit.input_tokens, hit.output_tokens) == ("answer 13999", 13999, None)
    # Without ignore_conflicts a duplicate is an error, of a kind the worker retries its batch on
    # (on PostgreSQL psycopg's own, which SQLAlchemy does not wrap on this path).
    with transaction(engine) as conn, pytest.raises(database_errors(), match="(?i)unique|duplicate"):
        insert_many(conn, table, rows[:2])


def test_worker_warm_up_asks_no_more_connections_than_the_pool_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """`pjudge worker --concurrency 40` on SQLite (a pool that keeps 5): the warm-up opens what the
    pool keeps and runs the task's reads, instead of waiting 30 s for a 41st connection and failing
    the worker's start."""
    import logging

    from store.db import get_engine

    url = f"sqlite:///{tmp_path}/warm.sqlite"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never contacted
    from worker.tasks import warm_up

    engine = get_engine(url)
    assert engine.pool.size() < 40
    with caplog.at_level(logging.WARNING, logger="pjudge.worker"):
        warm_up(connections=40)
    assert not [r for r in caplog.records if "warm-up" in r.getMessage()]
    assert engine.pool.checkedout() == 0


def test_the_batch_with_the_last_verdicts_marks_the_job_done_and_counts_add_up(engine: Engine) -> None:
    """Counts and completion are one UPDATE in record_verdicts: a redelivered batch adds nothing,
    and the job is done exactly when its last item has a verdict."""
    import random

    from judge.profiles import JudgeProfile
    from store import repo
    from tests.support.random_verdicts import make_items, random_verdict

    job = repo.create_job(engine, "owner", make_items(random.Random(5), 30),
                          JudgeProfile(name="persona-certainty", provider="openai", model="m")).job
    items = repo.job_items(engine, job.id, 0, 30)
    verdicts = [(p, random_verdict(random.Random(p), it, "persona-certainty", "m")) for p, it in items]
    assert repo.record_verdicts(engine, job.id, verdicts[:20]) == 20
    assert repo.get_job(engine, job.id).status == "queued"  # type: ignore[union-attr]
    assert repo.record_verdicts(engine, job.id, verdicts[10:20]) == 0  # a redelivery
    assert repo.record_verdicts(engine, job.id, verdicts[15:]) == 10
    done = repo.get_job(engine, job.id)
    assert done is not None and done.status == "done" and done.finished_at is not None
    assert done.n_verdicts == 30
    assert done.n_calls == sum(len(v.calls) for _, v in verdicts)
    assert done.n_failed_items == sum(v.winner is None for _, v in verdicts)
    assert done.cost_usd == pytest.approx(sum(c.cost_usd or 0 for _, v in verdicts for c in v.calls), abs=1e-6)
    repo.cancel_job(engine, job.id)  # a finished job stays done
    assert repo.get_job(engine, job.id).status == "done"  # type: ignore[union-attr]
