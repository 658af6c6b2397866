"""Celery tasks. A task judges one small batch of a job's items (the calls inside run
concurrently) and stores the verdicts idempotently; a redelivered task judges only what is
missing, and re-asks nothing the call cache already holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from sqlalchemy.engine import Engine

from judge.cascade import CascadeRun, escalated_verdict, judge_info, stages_of
from judge.endpoints import Access, AccessError
from judge.profiles import CascadeProfile, JudgeProfile, Judging
from judge.records import JudgeInfo, PairItem, Verdict
from judge.runner import Judge, RateLimiter
from store import budget, pages, repo
from store.db import database_errors, get_engine, transaction
from store.models import Job
from worker import lanes, telemetry
from worker.access import job_access
from worker.app import QUEUE, app
from worker.batches import CANCELLED, RUNNING, Batch, Stopped
from worker.broker import redis_client_url
from worker.cache import BatchCallCache
from worker.provider_batches import is_batch_job, tick_job
from worker.quota import over_cost_quota
from worker.runtime import runtime

log = logging.getLogger("pjudge.worker")
MAX_TASK_RETRIES = 5
_limiter: RateLimiter | None = None


def _rate_limiter() -> RateLimiter:
    global _limiter
    if _limiter is None:
        from worker.ratelimit import RedisRateLimiter

        async def make() -> RateLimiter:
            return RedisRateLimiter(redis_client_url())

        _limiter = runtime().run(make())
    return _limiter


async def _judge_all(judge: Judge, items: list[tuple[int, PairItem]], cache: BatchCallCache
                     ) -> list[tuple[int, Verdict]]:
    verdicts = await asyncio.gather(*(judge.judge_item(item, cache) for _, item in items))
    return [(position, verdict) for (position, _), verdict in zip(items, verdicts, strict=True)]


def _error_verdicts(judging: Judging, info: JudgeInfo, items: list[tuple[int, PairItem]], message: str
                    ) -> list[tuple[int, Verdict]]:
    """Verdicts of items that could not be judged; a cascade's are escalated (no stage judged them)."""
    verdicts = [
        (position, Verdict(id=item.id, winner=None, p_a=None, certainty=None, consistent=None, abstained=False,
                           bpde=None, human_label=item.human_label, judge=info, calls=[],
                           len_a=len(item.response_a), len_b=len(item.response_b), error=message,
                           metadata=dict(item.metadata)))
        for position, item in items
    ]
    if isinstance(judging, CascadeProfile):
        return [(position, escalated_verdict(judging, verdict)) for position, verdict in verdicts]
    return verdicts


@app.task(name="pjudge.judge_batch", bind=True, max_retries=MAX_TASK_RETRIES)
def judge_batch(self: Task[..., int], job_id: str, start: int, end: int) -> int:
    engine = get_engine()
    job = repo.get_job(engine, job_id)
    if job is None or job.status not in repo.ACTIVE:
        return 0
    if is_batch_job(job):  # provider batches: the job's one task sends them (worker.provider_batches)
        tick = tick_job(engine, job_id)
        return len(tick.verdicts) if tick is not None else 0
    entered = RUNNING.enter(job_id, job.owner, f"{job_id}[{start}:{end}]")
    if entered is None:
        # Its tenant holds its share of this worker while another tenant's batches wait: hand the
        # message back (to the end of its lane) and free the thread at once.
        raise Reject("tenant at its share while another waits", requeue=True)
    key, batch = entered
    try:
        with telemetry.batch_scope(job_id, batch.label):
            return _judge_batch(self, engine, job, start, end, batch)
    finally:
        RUNNING.leave(key)


def _judge_batch(task: Task[..., int], engine: Engine, job: Job, start: int, end: int, batch: Batch) -> int:
    job_id = job.id
    if job.status == "queued":
        repo.mark_running(engine, job_id)
    pending = repo.pending_items(engine, job_id, start, end)
    stored = 0
    if pending:
        judging = repo.job_profile(job)
        info = judge_info(judging)
        if job.max_cost_usd is not None and not _admitted(engine, job, start, pending, judging, batch):
            return 0
        # One call cache per stage that ran (one for a single judge): a cascade's earlier stages'
        # are flushed (durable) before the next stage starts; the last is written with the verdicts.
        caches: list[BatchCallCache] = []
        over_quota = over_cost_quota(engine, job.owner)
        try:
            if over_quota is not None:
                raise _OverQuota(over_quota)
            accesses = [job_access(engine, job, profile) for profile in stages_of(judging)]
            if isinstance(judging, CascadeProfile):
                verdicts = _judge_cascade(engine, judging, accesses, pending, batch, caches)
            else:
                (access, tenant), = accesses
                verdicts = _judge_stage(engine, judging, access, tenant, pending, batch, caches)
        except Stopped as stop:
            return _stopped(engine, batch, stop.reason, caches)
        except AccessError as exc:  # the job cannot run as stored: no retry helps
            verdicts = _error_verdicts(judging, info, pending, f"provider: {exc}")
            caches = []
        except _OverQuota as exc:  # no calls: the items get their verdicts (errors), the job completes
            log.info("batch %s: its owner's cost quota is used up; %d items get quota errors",
                     batch.label, len(pending))
            verdicts = _error_verdicts(judging, info, pending, str(exc))
            caches = []
        except Exception as exc:  # noqa: BLE001 - an internal failure must not lose the items
            if task.request.retries < MAX_TASK_RETRIES:
                log.warning("batch %s failed (%s); retrying", batch.label, type(exc).__name__)
                _flush(caches)  # what the provider was paid for
                raise task.retry(exc=exc, countdown=min(30, 2 ** task.request.retries)) from None
            log.error("batch %s (job %s, items %d to %d) failed %d times; its %d items get error verdicts\n%s",
                      batch.label, job_id, start, end - 1, task.request.retries + 1, len(pending),
                      safe_traceback(exc))
            verdicts = _error_verdicts(judging, info, pending, f"internal: {type(exc).__name__}")
            caches = []
        # The verdicts (every stage's calls), the new cache entries and the job's completion: one
        # transaction.
        try:
            prepared = repo.prepare_verdicts(engine, job_id, verdicts)
            new: list[Verdict] = []
            if prepared.rows:
                with transaction(engine) as conn:
                    for cache in caches:
                        cache.write(conn)
                    new = repo.store_new_verdicts(conn, prepared)
            stored = len(new)
            telemetry.stored(new)  # committed: counted once
        except database_errors() as exc:
            _flush(caches)  # keep what the provider was paid for, then try the batch again
            if task.request.retries < MAX_TASK_RETRIES:
                log.warning("batch %s not stored (%s); retrying", batch.label, type(exc).__name__)
                raise task.retry(exc=exc, countdown=min(30, 2 ** task.request.retries)) from None
            log.error("batch %s (job %s) not stored after %d tries\n%s", batch.label, job_id,
                      task.request.retries + 1, safe_traceback(exc))
            raise
        for cache in caches:
            cache.committed()
    if job.max_cost_usd is not None:
        budget.settle(engine, job_id, start)
    if not stored:
        repo.finish_if_complete(engine, job_id)
    return stored


def _judge_stage(engine: Engine, profile: JudgeProfile, access: Access, tenant: str,
                 items: list[tuple[int, PairItem]], batch: Batch, caches: list[BatchCallCache]
                 ) -> list[tuple[int, Verdict]]:
    """One judge profile over `items`, on the worker's event loop; its call cache joins `caches`
    before any call is made (so that a stop or a failure can still flush it)."""
    limiter = _rate_limiter() if (profile.requests_per_minute or profile.tokens_per_minute) else None
    with runtime().judge(profile, access, limiter=limiter) as judge:
        cache = BatchCallCache(engine, judge.cache_keys(item for _, item in items), tenant=tenant)
        caches.append(cache)
        return batch.run(runtime().submit, _judge_all(judge, items, cache))


def _judge_cascade(engine: Engine, cascade: CascadeProfile, accesses: list[tuple[Access, str]],
                   pending: list[tuple[int, PairItem]], batch: Batch, caches: list[BatchCallCache]
                   ) -> list[tuple[int, Verdict]]:
    """A cascade over the batch's items, stage by stage in this task (judge.cascade.CascadeRun):
    each stage with its own profile's access, rate limits and call cache. A stage's answers are made
    durable before the next stage starts, so a worker killed later re-asks none of them; the
    verdicts are stored once, with every stage's calls, by the caller."""
    position = {item.id: where for where, item in pending}
    run = CascadeRun(cascade, (item for _, item in pending))
    for stage, items in run.stages():
        if stage > 0:
            _flush(caches)
        profile = cascade.judges[stage]
        access, tenant = accesses[stage]
        judged = _judge_stage(engine, profile, access, tenant, [(position[item.id], item) for item in items],
                              batch, caches)
        run.record(stage, (verdict for _, verdict in judged))
    return [(position[verdict.id], verdict) for verdict in run.verdicts()]


def _flush(caches: list[BatchCallCache]) -> None:
    """Write the answers not yet stored, each cache in its own transaction; a database that is away
    loses them (they are asked again), never the batch."""
    for cache in caches:
        with contextlib.suppress(*database_errors()):
            cache.flush()


# Seconds a batch waits for the job's running batches to leave room in its budget before it hands
# its message back to the queue (and asks again when it comes round).
BUDGET_WAIT_S = 0.5


def _admitted(engine: Engine, job: Job, start: int, pending: list[tuple[int, PairItem]], judging: Judging,
              batch: Batch) -> bool:
    """Whether the batch of a job with a budget may make its calls (store.budget.admit, reserving
    the most they may cost: judge.estimate with max_tokens per call, every stage of a cascade). False: the budget is spent
    (the job ends budget_exhausted; these items get no verdict) or the job is no longer active.
    While the job's running batches hold the rest of the budget, the message goes back to the queue."""
    from judge.estimate import estimate

    usd = estimate(judging, [item for _, item in pending]).cost_usd
    outcome = budget.admit(engine, job.id, start, usd)
    if outcome == budget.WAIT:
        time.sleep(BUDGET_WAIT_S)
        raise Reject(f"batch {batch.label}: the job's running batches hold its budget; back to the queue",
                     requeue=True)
    if outcome == budget.EXHAUSTED:
        log.info("batch %s: job %s has spent its budget of %g USD; its %d items are not judged",
                 batch.label, job.id, job.max_cost_usd, len(pending))
    return outcome == budget.ADMITTED


class _OverQuota(Exception):
    """The job's owner has spent its daily cost quota: the batch makes no calls."""




def _stopped(engine: Engine, batch: Batch, reason: str, caches: list[BatchCallCache]) -> int:
    """A batch stopped from outside (worker.batches). A cancelled job's batch stores nothing and
    its message is done with; a batch handed back (another tenant waits, or the worker stops)
    keeps the answers paid for in the call cache and goes back to the queue, to be judged again
    from the cache."""
    if reason == CANCELLED:
        log.info("batch %s stopped: its job is no longer active", batch.label)
        return 0
    _flush(caches)
    raise Reject(f"batch {batch.label} {reason}; back to the queue", requeue=True)


def safe_traceback(exc: BaseException) -> str:
    """The exception's traceback for the log, without secrets: key-like strings and the values of
    key variables struck (judge.providers.base.redact), and URL passwords masked."""
    from judge.logs import scrub

    return scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


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


def prepare_publisher(celery_app: Celery | None = None) -> None:
    """Load the broker's transport before the first job is posted: importing kombu's Redis
    transport (and redis-py) took about 0.15 s of the first POST. Connects to nothing, and a
    failure only leaves that cost to the first POST."""
    try:
        with (celery_app or app).connection_for_write() as connection:
            connection.transport  # noqa: B018 - resolving it imports it
    except Exception as exc:  # noqa: BLE001 - the API serves without it
        log.warning("broker transport not preloaded (%s)", type(exc).__name__)


def _send(celery_app: Celery, job_id: str, start: int, end: int, queue: str = QUEUE, producer: Any = None) -> None:
    celery_app.send_task("pjudge.judge_batch", args=(job_id, start, end), queue=queue, retry=True,
                         retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
                         producer=producer)


PUBLISH_CHUNK = 500  # batch messages per Redis pipeline


def send_batches(celery_app: Celery, job_id: str, ranges: Iterable[tuple[int, int]],
                 queue: str = QUEUE) -> int:
    """One task per batch range, a broker round trip per PUBLISH_CHUNK of them: the messages go out
    as Redis pipelines of LPUSHes (kombu's Producer.batch, kombu 5.7+), not one round trip each
    (157 round trips took most of a 5,000-item POST on a loaded machine, and the first verdict
    waited for them); ranges are taken a chunk at a time, so a million-item job's 31,250 messages
    are never all in memory. Without batch publishing, or when a pipeline fails (delivery
    uncertain), that chunk's messages are sent one by one: a message sent twice is harmless, the
    writes are idempotent. Returns how many were sent."""
    sent = 0
    it = iter(ranges)
    while chunk := list(islice(it, PUBLISH_CHUNK)):
        if not (len(chunk) > 1 and _publish_pipelined(celery_app, job_id, chunk, queue)):
            for start, end in chunk:
                _send(celery_app, job_id, start, end, queue)
        sent += len(chunk)
    return sent


def _publish_pipelined(celery_app: Celery, job_id: str, chunk: Sequence[tuple[int, int]], queue: str) -> bool:
    try:
        with celery_app.producer_or_acquire() as producer:
            if getattr(producer, "supports_batch_publish", False):
                with producer.batch():
                    for start, end in chunk:
                        _send(celery_app, job_id, start, end, queue, producer)
                return True
    except Exception as exc:  # noqa: BLE001 - sent one by one by the caller, which retries and reports
        log.warning("job %s: batch publishing failed (%s); sending its batches one by one", job_id,
                    type(exc).__name__)
    return False


def lane_for(celery_app: Celery, owner: str) -> str:
    """The queue lane for `owner`'s batches (worker.lanes); the legacy queue, which every worker
    also consumes, when the broker cannot be asked (fairness lost for that job, nothing else)."""
    try:
        with celery_app.pool.acquire(block=True) as connection:
            # app.pool is kombu's connection pool, which celery-types calls a ProducerPool.
            client = connection.default_channel.client  # type: ignore[attr-defined]  # stubs mistype app.pool
            return lanes.assign_lane(client, owner)
    except Exception as exc:  # noqa: BLE001 - the send itself reports a broker that is away
        log.warning("no queue lane for this job's batches (%s); using the shared queue", type(exc).__name__)
        return QUEUE


def task_size(job: Job) -> int:
    """Items per task: the job's batch size; a batch-mode job's one task sends all its requests as
    provider batches."""
    return max(job.n_items, 1) if is_batch_job(job) else job.batch_size


def enqueue_job(job: Job, celery_app: Celery | None = None) -> int:
    """Send one task per batch of the job, to its owner's lane; returns how many were sent. The
    ranges are made one at a time (a million items are 31,250 of them)."""
    return enqueue_range(job, 0, job.n_items, celery_app)


def enqueue_range(job: Job, start: int, end: int, celery_app: Celery | None = None) -> int:
    """Send positions [start, end) of the job in tasks of `task_size` (a staged job started early
    sends each page as it is stored: store.pages); returns how many were sent."""
    celery_app = celery_app or app
    ranges = pages.task_ranges(start, end, task_size(job))
    return send_batches(celery_app, job.id, ranges, lane_for(celery_app, job.owner))


def requeue_missing(engine: Engine, job: Job, celery_app: Celery | None = None) -> int:
    """Re-send the batches of an active job that still miss verdicts (a safety net for a broker
    that lost messages); duplicates are harmless because writes are idempotent."""
    celery_app = celery_app or app
    missing = [(start, end) for start, end in pages.task_ranges(0, job.n_items, task_size(job))
               if len(repo.done_positions(engine, job.id, start, end)) < end - start]
    if missing:
        send_batches(celery_app, job.id, missing, lane_for(celery_app, job.owner))
    return len(missing)
