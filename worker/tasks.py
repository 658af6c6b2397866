"""Celery tasks. A task judges one small batch of a job's items (the calls inside run
concurrently) and stores the verdicts idempotently; a redelivered task judges only what is
missing, and re-asks nothing the call cache already holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from celery import Task

from judge.endpoints import AccessError
from judge.records import JudgeInfo, PairItem, Verdict
from store import repo
from store.db import database_errors, get_engine
from worker.access import job_access
from worker.app import QUEUE, app
from worker.broker import redis_client_url
from worker.cache import BatchCallCache
from worker.runtime import runtime

log = logging.getLogger("pjudge.worker")
MAX_TASK_RETRIES = 5
_limiter: Any = None


def _rate_limiter() -> Any:
    global _limiter
    if _limiter is None:
        from worker.ratelimit import RedisRateLimiter

        async def make() -> Any:
            return RedisRateLimiter(redis_client_url())

        _limiter = runtime().run(make())
    return _limiter


async def _judge_all(judge: Any, items: list[tuple[int, PairItem]], cache: Any) -> list[tuple[int, Verdict]]:
    verdicts = await asyncio.gather(*(judge.judge_item(item, cache) for _, item in items))
    return [(position, verdict) for (position, _), verdict in zip(items, verdicts, strict=True)]


def _error_verdicts(judge_info: Any, items: list[tuple[int, PairItem]], message: str) -> list[tuple[int, Verdict]]:
    return [
        (position, Verdict(id=item.id, winner=None, p_a=None, certainty=None, consistent=None, abstained=False,
                           bpde=None, human_label=item.human_label, judge=judge_info, calls=[],
                           len_a=len(item.response_a), len_b=len(item.response_b), error=message,
                           metadata=dict(item.metadata)))
        for position, item in items
    ]


@app.task(name="pjudge.judge_batch", bind=True, max_retries=MAX_TASK_RETRIES)
def judge_batch(self: Task, job_id: str, start: int, end: int) -> int:
    engine = get_engine()
    job = repo.get_job(engine, job_id)
    if job is None or job.status not in repo.ACTIVE:
        return 0
    if job.status == "queued":
        repo.mark_running(engine, job_id)
    pending = repo.pending_items(engine, job_id, start, end)
    stored = 0
    if pending:
        profile = repo.job_profile(job)
        info = JudgeInfo(profile=profile.name, provider=profile.provider, model=profile.model)
        try:
            access, tenant = job_access(engine, job, profile)
            limiter = _rate_limiter() if (profile.requests_per_minute or profile.tokens_per_minute) else None
            judge = runtime().judge_for(profile, access, limiter=limiter)
            cache: BatchCallCache | None = BatchCallCache(engine, judge.cache_keys(item for _, item in pending),
                                                          tenant=tenant)
            verdicts = runtime().run(_judge_all(judge, pending, cache))
        except AccessError as exc:  # the job cannot run as stored: no retry helps
            verdicts = _error_verdicts(info, pending, f"provider: {exc}")
            cache = None
        except Exception as exc:  # noqa: BLE001 - an internal failure must not lose the items
            if self.request.retries < MAX_TASK_RETRIES:
                log.warning("batch %s[%d:%d] failed (%s); retrying", job_id, start, end, type(exc).__name__)
                raise self.retry(exc=exc, countdown=min(30, 2 ** self.request.retries)) from None
            verdicts = _error_verdicts(info, pending, f"internal: {type(exc).__name__}")
            cache = None
        # The verdicts, the new cache entries and the job's completion: one transaction.
        try:
            stored = repo.record_verdicts(engine, job_id, verdicts, also=cache.write if cache is not None else None)
        except database_errors() as exc:
            if cache is not None:  # keep what the provider was paid for, then try the batch again
                with contextlib.suppress(*database_errors()):
                    cache.flush()
            if self.request.retries < MAX_TASK_RETRIES:
                log.warning("batch %s[%d:%d] not stored (%s); retrying", job_id, start, end, type(exc).__name__)
                raise self.retry(exc=exc, countdown=min(30, 2 ** self.request.retries)) from None
            raise
        if cache is not None:
            cache.committed()
    if not stored:
        repo.finish_if_complete(engine, job_id)
    return stored


def warm_up(connections: int) -> None:
    """Pay a worker's first-task costs before it takes tasks: the event loop thread, the HTTP
    client's imports, `connections` pooled database connections (the task threads' share) and the
    task's read statements, run once for a job that does not exist. On the PostgreSQL pipeline
    bench the first call then leaves 0.21-0.26 s after the first task's message arrives, against
    0.33 s cold."""
    import judge.providers.direct_http  # noqa: F401 - aiohttp and orjson, imported by the first job

    runtime()
    engine = get_engine()
    # Only the pool's kept connections: overflow ones are closed when returned, and holding more
    # than the pool allows would wait for its timeout.
    kept = getattr(engine.pool, "size", lambda: 1)()
    try:
        with contextlib.ExitStack() as stack:
            for _ in range(max(1, min(connections, kept))):
                stack.enter_context(engine.connect())
        repo.get_job(engine, "")
        repo.pending_items(engine, "", 0, 0)
        BatchCallCache(engine, [""])
    except Exception as exc:  # noqa: BLE001 - a warm-up must never keep the worker from starting
        log.warning("warm-up skipped (%s); the first task pays its costs", type(exc).__name__)


def prepare_publisher(celery_app: Any = None) -> None:
    """Load the broker's transport before the first job is posted: importing kombu's Redis
    transport (and redis-py) took about 0.15 s of the first POST. Connects to nothing, and a
    failure only leaves that cost to the first POST."""
    try:
        with (celery_app or app).connection_for_write() as connection:
            connection.transport  # noqa: B018 - resolving it imports it
    except Exception as exc:  # noqa: BLE001 - the API serves without it
        log.warning("broker transport not preloaded (%s)", type(exc).__name__)


def _send(celery_app: Any, job_id: str, start: int, end: int) -> None:
    celery_app.send_task("pjudge.judge_batch", args=(job_id, start, end), queue=QUEUE, retry=True,
                         retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})


def enqueue_job(job: Any, celery_app: Any = None) -> int:
    """Send one task per batch of the job; returns how many were sent."""
    batches = repo.batches(job)
    for start, end in batches:
        _send(celery_app or app, job.id, start, end)
    return len(batches)


def requeue_missing(engine: Any, job: Any, celery_app: Any = None) -> int:
    """Re-send the batches of an active job that still miss verdicts (a safety net for a broker
    that lost messages); duplicates are harmless because writes are idempotent."""
    sent = 0
    for start, end in repo.batches(job):
        if len(repo.done_positions(engine, job.id, start, end)) < end - start:
            _send(celery_app or app, job.id, start, end)
            sent += 1
    return sent
