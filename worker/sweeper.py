"""A safety net run beside each worker: an active job with no progress for a while gets its
missing batches sent again (for example when a broker lost its queue). Idempotent writes make a
duplicate harmless, so several workers may sweep at once."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from judge.settings import settings
from store import repo
from store.db import get_engine

log = logging.getLogger("pjudge.sweeper")


def sweep_once(stale_after: timedelta) -> int:
    from worker.tasks import requeue_missing

    engine = get_engine()
    now = datetime.now(UTC)
    sent = 0
    for job in repo.active_jobs(engine):
        updated = job.updated_at if job.updated_at.tzinfo else job.updated_at.replace(tzinfo=UTC)
        if now - updated < stale_after:
            continue
        repo.touch_job(engine, job.id)  # one sweeper at a time re-sends a given job
        sent += requeue_missing(engine, job)
        if job.n_verdicts >= job.n_items:
            repo.finish_if_complete(engine, job.id)
    return sent


def start_sweeper(interval_s: float | None = None, stale_after_s: float | None = None) -> threading.Event:
    """Every `interval_s` (PJUDGE_SWEEP_INTERVAL, default 15 s), re-send the missing batches of
    jobs with no progress for `stale_after_s` (PJUDGE_SWEEP_AFTER, default 120 s)."""
    interval_s = interval_s or settings().sweep_interval
    stale_after_s = stale_after_s or settings().sweep_after
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                sent = sweep_once(timedelta(seconds=stale_after_s))
                if sent:
                    log.warning("re-sent %d batch(es) of stalled jobs", sent)
            except Exception as exc:  # noqa: BLE001 - the broker or database may be down for a while
                log.info("sweep skipped: %s", type(exc).__name__)

    threading.Thread(target=loop, name="pjudge-sweeper", daemon=True).start()
    return stop
