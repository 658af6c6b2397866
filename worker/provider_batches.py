"""Batch-mode jobs in the service (profile mode "batch"; judge/batching.py does the judging).

A job's provider batches live in the database (store.models.ProviderBatch and its requests), so
no worker, API or Redis crash loses one: `tick_job` (run by the job's one task and then every
PJUDGE_BATCH_POLL_S by the poller beside each worker, under a lease so one worker at a time)
polls the job's live batches, stores their answers (and the whole ones in the tenant's call
cache) in one transaction per batch, stores the verdicts of the items now complete
(store.repo.record_verdicts: exactly once), and sends what is still needed as new batches (their
rows and custom_ids first, the file id when uploaded, the batch id when created). A cancelled job's
live batches are cancelled at the provider by the poller.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from judge.batching import (
    LIVE_BATCH,
    BatchJudge,
    LiveBatch,
    Planned,
    RequestState,
    TickResult,
    ended,
    request_state,
)
from judge.endpoints import AccessError
from judge.profiles import JudgeProfile
from judge.providers.base import ProviderError
from judge.providers.batch_api import BatchOutcome, create_batch_provider
from judge.records import JudgeInfo
from judge.settings import settings
from store import repo
from store.bulk import insert_many
from store.db import transaction
from store.models import (
    CacheEntry,
    Job,
    ProviderBatch,
    ProviderBatchLease,
    ProviderBatchRequest,
    table_of,
    utcnow,
)
from worker.access import job_access
from worker.cache import BatchCallCache
from worker.errors import error_verdicts, safe_traceback
from worker.quota import over_cost_quota
from worker.runtime import runtime

log = logging.getLogger("pjudge.worker")
HOST = socket.gethostname()[:30]
HOLDER = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
# A tick holds its job's lease this long at most: a holder that died on another host frees it when
# it passes; one that died on this host (kill -9, the watchdog's restart) at once (`_dead`).
LEASE_S = 120.0
LIVE = LIVE_BATCH


def is_batch_job(job: Job) -> bool:
    """The job's (single-judge) profile has mode "batch"."""
    try:
        profile = json.loads(job.profile_json)
    except ValueError:
        return False
    return isinstance(profile, dict) and profile.get("mode") == "batch"


def _profile(job: Job) -> JudgeProfile:
    """A batch-mode job's profile (a single judge: cascades run interactively)."""
    return JudgeProfile.model_validate_json(job.profile_json)


# ---------------------------------------------------------------- the lease

def acquire(engine: Engine, job_id: str) -> bool:
    now = utcnow()
    until = now + timedelta(seconds=LEASE_S)
    with transaction(engine) as conn:
        taken = conn.execute(update(ProviderBatchLease)
                             .where(col(ProviderBatchLease.job_id) == job_id, col(ProviderBatchLease.until) < now)
                             .values(holder=HOLDER, until=until)).rowcount
        if taken:
            return True
        inserted = insert_many(conn, table_of(ProviderBatchLease), [{"job_id": job_id, "holder": HOLDER, "until": until}],
                               ignore_conflicts=True, returning="job_id")
        if inserted:
            return True
        holder = conn.execute(select(col(ProviderBatchLease.holder))
                              .where(col(ProviderBatchLease.job_id) == job_id)).scalar_one_or_none()
        if holder is None or holder == HOLDER or not _dead(holder):
            return False
        return bool(conn.execute(update(ProviderBatchLease)
                                 .where(col(ProviderBatchLease.job_id) == job_id,
                                        col(ProviderBatchLease.holder) == holder)
                                 .values(holder=HOLDER, until=until)).rowcount)


def _dead(holder: str) -> bool:
    """A holder on this host whose process is gone."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


def release(engine: Engine, job_id: str) -> None:
    with transaction(engine) as conn:
        conn.execute(update(ProviderBatchLease)
                     .where(col(ProviderBatchLease.job_id) == job_id, col(ProviderBatchLease.holder) == HOLDER)
                     .values(until=utcnow() - timedelta(seconds=1)))


# ---------------------------------------------------------------- the store

class DbBatchStore:
    """judge.batching.BatchStore over the service database, for one job (its rows read once per
    change)."""

    def __init__(self, engine: Engine, job_id: str, cache: BatchCallCache):
        self.engine = engine
        self.job_id = job_id
        self.cache = cache
        self._by_key: dict[str, list[tuple[Any, ...]]] | None = None

    def _rows(self) -> dict[str, list[tuple[Any, ...]]]:
        if self._by_key is None:
            r, b = ProviderBatchRequest, ProviderBatch
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(col(r.key), col(r.status), col(r.raw), col(r.input_tokens), col(r.output_tokens),
                           col(r.truncated_from), col(r.error), col(b.status))
                    .join(b, col(b.id) == col(r.batch_row)).where(col(r.job_id) == self.job_id).order_by(col(r.id))
                ).all()
            self._by_key = {}
            for row in rows:
                self._by_key.setdefault(row[0], []).append(tuple(row[1:]))
        return self._by_key

    def state(self, key: str) -> RequestState:
        return request_state(self._rows().get(key, []))

    def live(self) -> list[LiveBatch]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(col(ProviderBatch.id), col(ProviderBatch.batch_id))
                                .where(col(ProviderBatch.job_id) == self.job_id, col(ProviderBatch.status) == "live")
                                .order_by(col(ProviderBatch.id))).all()
        return [LiveBatch(int(row or 0), batch_id) for row, batch_id in rows]

    def orphans(self) -> list[tuple[int, str | None]]:
        # Under the lease, before this tick sends anything: a row still submitting was left by a dead tick.
        with self.engine.connect() as conn:
            rows = conn.execute(select(col(ProviderBatch.id), col(ProviderBatch.input_file_id))
                                .where(col(ProviderBatch.job_id) == self.job_id,
                                       col(ProviderBatch.status) == "submitting")).all()
        return [(int(row or 0), file_id) for row, file_id in rows]

    def lost(self, row: int) -> None:
        self._set(row, status="lost")
        self._by_key = None

    def begin(self, provider: str, requests: Sequence[Planned]) -> int:
        with transaction(self.engine) as conn:
            row = insert_many(conn, table_of(ProviderBatch), [{
                "job_id": self.job_id, "provider": provider, "status": "submitting", "n_requests": len(requests),
                "created_at": utcnow(), "updated_at": utcnow()}], returning="id")[0]
            insert_many(conn, table_of(ProviderBatchRequest), [{
                "batch_row": row, "job_id": self.job_id, "custom_id": p.custom_id, "key": p.key, "position": p.tag,
                "order": p.request.order, "sample": p.request.sample, "attempt": p.request.attempt, "stage": 0,
                "status": "pending"} for p in requests])
        self._by_key = None
        return int(row)

    def _set(self, row: int, **values: Any) -> None:
        with transaction(self.engine) as conn:
            conn.execute(update(ProviderBatch).where(col(ProviderBatch.id) == row).values(updated_at=utcnow(), **values))

    def set_file(self, row: int, input_file_id: str | None) -> None:
        self._set(row, input_file_id=input_file_id)

    def set_batch(self, row: int, batch_id: str) -> None:
        self._set(row, batch_id=batch_id, status="live")
        self._by_key = None

    def failed(self, row: int, error: str) -> None:
        with transaction(self.engine) as conn:
            conn.execute(update(ProviderBatch).where(col(ProviderBatch.id) == row)
                         .values(status="failed", error=error[:2000], updated_at=utcnow()))
            conn.execute(update(ProviderBatchRequest).where(col(ProviderBatchRequest.batch_row) == row)
                         .values(status="failed", error=error[:2000]))
        self._by_key = None

    def finish(self, row: int, outcomes: Sequence[BatchOutcome]) -> None:
        requests = table_of(ProviderBatchRequest)
        with self.engine.connect() as conn:
            ids = {custom_id: (request_id, key) for custom_id, request_id, key in conn.execute(
                select(col(ProviderBatchRequest.custom_id), col(ProviderBatchRequest.id),
                       col(ProviderBatchRequest.key)).where(col(ProviderBatchRequest.batch_row) == row)).all()}
        end = ended(ids, outcomes)
        answered = [{"rid": ids[custom_id][0], "raw": result.text, "input_tokens": result.input_tokens,
                     "output_tokens": result.output_tokens, "truncated_from": result.truncated_from}
                    for custom_id, result in end.answered.items()]
        failed = [{"rid": ids[custom_id][0], "error": error[:2000]} for custom_id, error in end.failed.items()]
        cached = [{"key": self.cache.scoped_key(ids[custom_id][1]), "raw": result.text,
                   "input_tokens": result.input_tokens, "output_tokens": result.output_tokens, "created_at": utcnow()}
                  for custom_id, result in end.whole.items()]
        with transaction(self.engine) as conn:
            if answered:
                conn.execute(update(requests).where(requests.c.id == bindparam("rid"))
                             .values(status="answered", raw=bindparam("raw"), input_tokens=bindparam("input_tokens"),
                                     output_tokens=bindparam("output_tokens"),
                                     truncated_from=bindparam("truncated_from")), answered)
            if failed:
                conn.execute(update(requests).where(requests.c.id == bindparam("rid"))
                             .values(status="failed", error=bindparam("error")), failed)
            insert_many(conn, table_of(CacheEntry), sorted(cached, key=lambda r: r["key"]), ignore_conflicts=True)
            conn.execute(update(ProviderBatch).where(col(ProviderBatch.id) == row)
                         .values(status="ended", updated_at=utcnow()))
        self._by_key = None


# ---------------------------------------------------------------- ticking a job

def tick_job(engine: Engine, job_id: str) -> TickResult | None:
    """One tick of a batch-mode job under its lease; None when another worker holds it or the job
    is not active (a cancelled job's batches are cancelled at the provider)."""
    if not acquire(engine, job_id):
        return None
    try:
        job = repo.get_job(engine, job_id)
        if job is None:
            return None
        if job.status not in repo.ACTIVE:
            cancel_batches(engine, job)
            return None
        return _tick(engine, job)
    finally:
        release(engine, job_id)


def _tick(engine: Engine, job: Job) -> TickResult:
    if job.status == "queued":
        repo.mark_running(engine, job.id)
    pending = repo.pending_items(engine, job.id, 0, job.n_items)
    if not pending:
        repo.finish_if_complete(engine, job.id)
        return TickResult()
    profile = _profile(job)
    try:
        access, tenant = job_access(engine, job, profile)
        batches = create_batch_provider(profile, access)
    except (AccessError, ProviderError) as exc:  # the job cannot run as stored: no retry helps
        info = JudgeInfo(profile=profile.name, provider=profile.provider, model=profile.model)
        repo.record_verdicts(engine, job.id, error_verdicts(info, pending, f"provider: {exc}"))
        return TickResult()
    try:
        with runtime().judge(profile, access) as judge:
            cache = BatchCallCache(engine, judge.cache_keys(item for _, item in pending), tenant=tenant)
            store = DbBatchStore(engine, job.id, cache)
            # The daily cost quota, as for interactive batches: checked before a new round is sent
            # (a round in flight is collected), so the spend overshoots by one round at most.
            over_quota = over_cost_quota(engine, job.owner)
            if over_quota is not None and not store.live():
                info = JudgeInfo(profile=profile.name, provider=profile.provider, model=profile.model)
                repo.record_verdicts(engine, job.id, error_verdicts(info, pending, over_quota))
                return TickResult()
            runner = BatchJudge(judge, batches, store, cache, max_tries=settings().batch_max_tries)
            result = runtime().run(runner.tick(pending))
    finally:
        runtime().run(batches.aclose())
    if result.verdicts:
        repo.record_verdicts(engine, job.id, result.verdicts)
    if result.submitted:
        log.info("job %s: %d requests sent in provider batches", job.id, result.submitted)
    return result


def cancel_batches(engine: Engine, job: Job) -> int:
    """Cancel a stopped job's live provider batches (their rows become cancelled)."""
    with engine.connect() as conn:
        rows = conn.execute(select(col(ProviderBatch.id), col(ProviderBatch.batch_id))
                            .where(col(ProviderBatch.job_id) == job.id, col(ProviderBatch.status).in_(LIVE))).all()
    if not rows:
        return 0
    profile = _profile(job)
    try:
        access, _ = job_access(engine, job, profile)
        batches = create_batch_provider(profile, access)
    except (AccessError, ProviderError) as exc:
        log.warning("job %s: its provider batches cannot be cancelled (%s)", job.id, exc)
        return 0
    cancelled = 0
    try:
        for row, batch_id in rows:
            if batch_id:
                try:
                    runtime().run(batches.cancel(batch_id))
                except ProviderError as exc:
                    log.warning("job %s: provider batch %s not cancelled (%s)", job.id, batch_id, exc)
                    continue
            with transaction(engine) as conn:
                conn.execute(update(ProviderBatch).where(col(ProviderBatch.id) == row)
                             .values(status="cancelled", updated_at=utcnow()))
            cancelled += 1
    finally:
        runtime().run(batches.aclose())
    log.info("job %s is %s: %d provider batch(es) cancelled", job.id, job.status, cancelled)
    return cancelled


def by_turns(jobs: Sequence[Job]) -> list[Job]:
    """The jobs with their owners taking turns (each owner's first job, then each one's second, ...,
    owners in order of their first job, each owner's jobs oldest first): a tick waits on the
    provider, so a tenant with many batch jobs must not hold back another tenant's one."""
    queues: dict[str, list[Job]] = {}
    for job in sorted(jobs, key=lambda job: (job.created_at, job.id)):
        queues.setdefault(job.owner, []).append(job)
    return [job for turn in itertools.zip_longest(*queues.values()) for job in turn if job is not None]


def poll_once(engine: Engine) -> int:
    """Tick every active batch-mode job, owners taking turns (`by_turns`), and cancel the live
    batches of stopped ones; returns how many jobs were ticked."""
    ticked = 0
    for job in by_turns([job for job in repo.active_jobs(engine) if is_batch_job(job)]):
        try:
            ticked += tick_job(engine, job.id) is not None
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others' polls
            log.error("job %s: batch tick failed; trying again next poll\n%s", job.id, safe_traceback(exc))
    with engine.connect() as conn:
        stopped = conn.execute(select(col(ProviderBatch.job_id)).distinct()
                               .join(Job, col(Job.id) == col(ProviderBatch.job_id))
                               .where(col(ProviderBatch.status).in_(LIVE), col(Job.status).not_in(repo.ACTIVE))).all()
    for (job_id,) in stopped:
        tick_job(engine, job_id)  # a stopped job's tick cancels its batches
    return ticked


def start_poller(interval_s: float | None = None) -> threading.Event:
    """Every `interval_s` (PJUDGE_BATCH_POLL_S), `poll_once`. Runs beside each worker (with the
    sweeper); the leases keep two workers off one job."""
    from store.db import get_engine

    interval_s = interval_s or settings().batch_poll_s
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                poll_once(get_engine())
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while
                log.info("batch poll skipped: %s", type(exc).__name__)

    threading.Thread(target=loop, name="pjudge-batch-poller", daemon=True).start()
    return stop

