"""Real services for the tests (llm_sim/harness.py; an unavailable one skips the test) and
`Service`: worker processes sharing one Redis and one database."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from judge.jsonl import read_items
from judge.profiles import load_profile
from judge.records import PairItem
from llm_sim import harness
from llm_sim.harness import HangingServer, Process, free_port, wait_for_port
from store import repo
from store.db import get_engine
from store.models import CallRow, VerdictRow
from tests.support.cli import EXAMPLE_ITEMS

__all__ = ["BackgroundDrops", "HangingServer", "Process", "RedisServer", "Service", "copy_postgres_database",
           "create_postgres_database", "drop_postgres_database", "free_port", "many_items", "sim_profile", "wait_for_port"]


class RedisServer(harness.RedisServer):
    """A redis-server on a free loopback port; the test is skipped where there is no binary."""

    def start(self) -> RedisServer:
        try:
            super().start()
        except harness.Unavailable as exc:
            pytest.skip(str(exc))
        return self


def postgres_admin_url() -> str | None:
    """PJUDGE_TEST_POSTGRES_URL (set by .ci/run), e.g. postgresql://pjudge:pjudge@127.0.0.1:5432/postgres."""
    return os.environ.get("PJUDGE_TEST_POSTGRES_URL")


def create_postgres_database() -> str:
    """A new database on PJUDGE_TEST_POSTGRES_URL's server; the test is skipped without one."""
    try:
        return harness.create_postgres_database(postgres_admin_url())
    except harness.Unavailable as exc:
        pytest.skip(str(exc))


def drop_postgres_database(url: str) -> None:
    admin = postgres_admin_url()
    assert admin is not None, "PJUDGE_TEST_POSTGRES_URL went away during the test"
    harness.drop_postgres_database(url, admin)


def copy_postgres_database(template_url: str) -> str:
    """A new database that is a copy of `template_url`'s (CREATE DATABASE ... TEMPLATE: a file copy,
    tenths of a second, where migrating a new one runs a dozen migrations' DDL for seconds). The
    template must have no open connection."""
    import psycopg

    admin = postgres_admin_url()
    assert admin is not None, "PJUDGE_TEST_POSTGRES_URL went away during the test"
    name = f"pjudge_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_url.rsplit("/", 1)[1]}"')
    return admin.rsplit("/", 1)[0] + f"/{name}"


class BackgroundDrops:
    """DROP DATABASE in background threads. Each drop waits about a second on the server (it
    signals every backend to close the database's files), little of it CPU: dropping the tests'
    databases while the next tests run takes that second off each PostgreSQL test. `wait()` (at
    the end of the session) returns when all are dropped and raises the first error."""

    def __init__(self, threads: int = 3):
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="drop-database")
        self.pending: list[Future[None]] = []

    def drop(self, url: str) -> None:
        admin = postgres_admin_url()
        assert admin is not None, "PJUDGE_TEST_POSTGRES_URL went away during the test"
        self.pending.append(self.pool.submit(harness.drop_postgres_database, url, admin))

    def wait(self) -> None:
        self.pool.shutdown(wait=True)
        for future in self.pending:
            future.result()


class Service:
    """Worker processes plus a way to submit jobs, all sharing one Redis and one database."""

    def __init__(self, tmp_path: Path, database_url: str, redis: RedisServer):
        self.tmp_path, self.database_url, self.redis = tmp_path, database_url, redis
        self.engine = get_engine(database_url)
        self.workers: list[Process] = []
        self.env = dict(os.environ)
        self.env.update({"DATABASE_URL": database_url, "REDIS_URL": redis.url,
                         "PJUDGE_HOME": str(tmp_path / "home"), "PJUDGE_VISIBILITY_TIMEOUT": "30",
                         # A message popped by a worker just as Redis stops is in no list when it
                         # comes back (kombu's BRPOP and its unacked bookkeeping are two steps);
                         # the sweeper re-sends it. Sooner here, so that the tests stay short.
                         "PJUDGE_SWEEP_AFTER": "20", "PJUDGE_SWEEP_INTERVAL": "3",
                         # The simulators are on loopback with ports chosen per test: not listed as
                         # operator endpoints, so called as client-chosen ones, which this allows.
                         "PJUDGE_ALLOW_PRIVATE_ENDPOINTS": "true"})
        self._celery: Any = None

    def start_worker(self, concurrency: int = 4) -> Process:
        log = self.tmp_path / f"worker-{len(self.workers)}.log"
        worker = Process(["worker", f"--concurrency={concurrency}", "--loglevel=INFO"], self.env, log).start()
        self.workers.append(worker)
        return worker

    def celery(self) -> Any:
        if self._celery is None:
            from celery import Celery

            from worker.app import create_app

            self._celery = create_app(self.redis.url)
            assert isinstance(self._celery, Celery)
        return self._celery

    def submit(self, items: list[PairItem], profile: Any, batch_size: int = 16, owner: str = "test-owner") -> str:
        from worker.tasks import enqueue_job

        job = repo.create_job(self.engine, owner, items, profile, batch_size=batch_size).job
        enqueue_job(job, self.celery())
        return job.id

    def wait_done(self, job_id: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = repo.get_job(self.engine, job_id)
            if job is not None and job.status in repo.TERMINAL:
                return job
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} not done in {timeout}s: {repo.get_job(self.engine, job_id)}\n"
                             + "\n".join(w.output()[-3000:] for w in self.workers))

    def wait_verdicts(self, job_id: str, at_least: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = repo.get_job(self.engine, job_id)
            if job is not None and job.n_verdicts >= at_least:
                return
            time.sleep(0.1)
        raise AssertionError(f"fewer than {at_least} verdicts after {timeout}s")

    def row_counts(self, job_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            verdicts = conn.execute(select(func.count()).select_from(VerdictRow)
                                    .where(VerdictRow.job_id == job_id)).scalar_one()
            distinct_verdicts = conn.execute(select(func.count(func.distinct(VerdictRow.item_id)))
                                             .where(VerdictRow.job_id == job_id)).scalar_one()
            calls = conn.execute(select(func.count()).select_from(CallRow).where(CallRow.job_id == job_id)).scalar_one()
        return {"verdicts": verdicts, "distinct_verdicts": distinct_verdicts, "calls": calls}

    def stop(self) -> None:
        """SIGTERM to every process at once, then wait for each (a worker with calls out waits its
        shutdown grace, PJUDGE_SHUTDOWN_GRACE_S: one after the other, that was one grace per worker)."""
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.killpg(worker.proc.pid, signal.SIGTERM)
        for worker in self.workers:
            if worker.proc is not None:
                try:
                    worker.proc.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill9()


def many_items(n: int, seed: int = 1) -> list[PairItem]:
    """n items built from the example items, each with its own id (and so its own prompt text)."""
    base = read_items(EXAMPLE_ITEMS)
    rng = random.Random(seed)
    items = []
    for i in range(n):
        item = base[i % len(base)]
        items.append(item.model_copy(update={"id": f"{item.id}-{i}", "prompt": f"{item.prompt} (#{i})"}))
    rng.shuffle(items)
    return items


def sim_profile(sim: Any, **overrides: Any) -> Any:
    return load_profile("persona-certainty", provider="openai-compatible", model="sim-judge",
                        base_url=sim.openai_base_url, **overrides)
