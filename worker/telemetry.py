"""The worker's hooks into metrics, logs and traces, called from worker.tasks: a batch task runs
inside `batch_scope` (its duration and outcome, its log ids, its span), and what a batch stored
is counted by `stored` after its transaction committed (judge.metrics.observe_stored)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from celery.exceptions import Reject, Retry

from judge import logs, metrics, tracing
from judge.records import Verdict
from store.db import database_errors


@contextlib.contextmanager
def batch_scope(job_id: str, label: str) -> Iterator[None]:
    """One batch task: `pjudge.batch` span, log lines with its job and batch, its duration by
    outcome (done, retried, requeued, failed) and its retries by reason."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        with logs.bound(job_id=job_id, batch=label), tracing.batch_span(job_id, label):
            yield
        outcome = "done"
    except Retry as retry:
        outcome = "retried"
        cause = getattr(retry, "exc", None)
        reason = "database" if isinstance(cause, database_errors()) else "error"
        metrics.BATCH_RETRIES.labels(reason).inc()
        raise
    except Reject:
        outcome = "requeued"
        raise
    finally:
        metrics.BATCH_DURATION.labels(outcome).observe(time.perf_counter() - started)


def stored(verdicts: Iterable[Verdict]) -> None:
    """Count what a batch's committed transaction inserted (and nothing a redelivery re-stored)."""
    metrics.observe_stored(verdicts)


def serve_metrics() -> Path | None:
    """For `pjudge worker` (before it starts its processes), when PJUDGE_WORKER_METRICS_PORT is
    set: the processes' metric files go to PJUDGE_METRICS_DIR (emptied; default a new temporary
    folder, removed at exit), given to them as PROMETHEUS_MULTIPROC_DIR, and this process serves
    their sum at http://PJUDGE_WORKER_METRICS_HOST:PORT/metrics. Returns the folder, or None."""
    from judge.settings import settings

    config = settings()
    if config.worker_metrics_port is None:
        return None
    if config.metrics_dir:
        directory = metrics.prepare_multiprocess_dir(Path(config.metrics_dir))
    else:
        directory = Path(tempfile.mkdtemp(prefix="pjudge-metrics-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[metrics.MULTIPROC_ENV] = str(directory)  # the worker processes inherit it
    metrics.serve_multiprocess(directory, config.worker_metrics_port, config.worker_metrics_host)
    return directory


def configure_logs(level: int | str) -> None:
    """JSON lines when PJUDGE_LOG_FORMAT=json; the text logs stay as they were."""
    from judge.settings import settings

    if settings().log_format == "json":
        logs.configure(level, "json")
        logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter on every start
