"""A worker process behind `pjudge worker` (which runs one per core and supervises and restarts
each: worker.processes).

Celery's Redis consumer can stop consuming after the broker restarts, without any error (a known
Celery/kombu problem). A watchdog here notices either a broker outage that has ended or tasks
waiting in the queue while this worker sits idle, lets running tasks finish, and exits with
RESTART_EXIT_CODE so the supervisor starts a fresh process. Unacknowledged tasks come back by the
visibility timeout, and idempotent writes make any re-run harmless.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
import time

from worker import lanes

RESTART_EXIT_CODE = 75
log = logging.getLogger("pjudge.worker")


class Activity:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.last_start = time.monotonic()

    def started(self, **_: object) -> None:
        with self.lock:
            self.running += 1
            self.last_start = time.monotonic()

    def finished(self, **_: object) -> None:
        with self.lock:
            self.running -= 1


def _watchdog(activity: Activity, concurrency: int, redis_url: str, queue: str, interval: float = 1.0) -> None:
    import redis

    from judge.settings import settings
    from worker.batches import RUNNING, stop_after_grace

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    broker_was_down = False
    waiting_since: float | None = None
    while True:
        time.sleep(interval)
        try:
            backlog = lanes.backlog(client, queue)
        except Exception:  # noqa: BLE001 - any failure to reach the broker
            broker_was_down = True
            continue
        now = time.monotonic()
        idle = activity.running < concurrency and now - activity.last_start > 15
        waiting_since = (waiting_since or now) if backlog and idle else None
        stalled = waiting_since is not None and now - waiting_since > 10
        if broker_was_down or stalled:
            reason = "the broker came back" if broker_was_down else "tasks wait while this worker is idle"
            log.warning("restarting the worker process: %s", reason)
            # Running batches get the same grace as on SIGTERM, then go back to the queue.
            stop_after_grace(RUNNING, settings().shutdown_grace_s)
            deadline = now + 60
            while activity.running > 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            from worker.runtime import close_runtime

            close_runtime()  # os._exit runs no atexit hook: the judges' connections are closed here
            logging.shutdown()
            os._exit(RESTART_EXIT_CODE)


def _watch_batches(concurrency: int, redis_url: str, queue: str) -> None:
    """Cap each tenant's share of this process's threads and stop the batches of cancelled jobs
    (worker.batches)."""
    import redis

    from judge.settings import settings
    from store import repo
    from store.db import get_engine
    from worker.batches import RUNNING, start_monitor

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    engine = get_engine()

    def waiting() -> set[str]:
        return lanes.waiting_owners(client, queue)

    RUNNING.configure(concurrency, settings().tenant_share, waiting_now=waiting)
    start_monitor(RUNNING, lambda ids: repo.job_statuses(engine, ids), waiting, repo.ACTIVE)


def run(concurrency: int, loglevel: str, sweep: bool, max_in_flight: int | None = None, index: int = 0,
        processes: int = 1) -> None:
    """One worker process: `concurrency` task threads on one event loop with `max_in_flight` calls
    in flight (default PJUDGE_WORKER_MAX_IN_FLIGHT): process `index` of the `processes` that
    `pjudge worker` runs on this host (worker.processes splits the host's budgets)."""
    from worker.telemetry import configure_logs

    configure_logs(loglevel.upper())  # PJUDGE_LOG_FORMAT=json: JSON lines
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    from celery import signals

    from judge.settings import settings
    from store.db import get_engine

    get_engine()  # migrate before taking tasks
    # The SDKs take a second or more to import: pay it before the first task, not during it.
    import judge.providers.anthropic_provider  # noqa: F401
    import judge.providers.openai_provider  # noqa: F401
    from worker.app import QUEUE, app
    from worker.batches import RUNNING, stop_after_grace
    from worker.broker import redis_client_url
    from worker.runtime import runtime
    from worker.tasks import warm_up

    runtime().max_in_flight = max_in_flight
    warm_up(connections=concurrency)

    # The imports leave some 340k objects that every full collection would walk again, holding
    # the GIL for long enough to stall the event loop's calls (a dip every few seconds at 600
    # calls/s). Frozen, they are never scanned; task garbage is still collected.
    gc.collect()
    gc.freeze()

    activity = Activity()
    signals.task_prerun.connect(activity.started, weak=False)
    signals.task_postrun.connect(activity.finished, weak=False)

    def announce(**_: object) -> None:
        # One line whatever the log level: people and scripts wait for it before sending work.
        in_flight = max_in_flight or settings().worker_max_in_flight
        print(f"pjudge worker ready: process {index + 1} of {processes} (pid {os.getpid()}), queue {QUEUE}, "
              f"{concurrency} threads, {in_flight} calls in flight", file=sys.stderr, flush=True)

    signals.worker_ready.connect(announce, weak=False)
    threading.Thread(target=_watchdog, args=(activity, concurrency, redis_client_url(), QUEUE),
                     name="pjudge-watchdog", daemon=True).start()
    _watch_batches(concurrency, redis_client_url(), QUEUE)

    def shutting_down(**_: object) -> None:
        stop_after_grace(RUNNING, settings().shutdown_grace_s)

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    if sweep:
        from worker.sweeper import start_sweeper

        start_sweeper()
    from worker.provider_batches import start_poller

    start_poller()  # batch-mode jobs advance only through it: not part of the optional sweep
    from worker.webhooks import start_webhooks

    start_webhooks()  # webhook events are armed and queued only through it, like the batch poller
    app.worker_main([
        *(["--quiet"] if settings().log_format == "json" else []),  # no banner amid the JSON lines
        "worker", "--pool=threads", f"--concurrency={concurrency}", "-Q", ",".join(lanes.all_queues(QUEUE)),
        f"--hostname=pjudge{index + 1}@%h",
        f"--loglevel={loglevel}",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--prefetch-multiplier=1",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.main")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="calls in flight in this process [default: PJUDGE_WORKER_MAX_IN_FLIGHT]")
    parser.add_argument("--process", type=int, default=0, help="this process's index among --processes")
    parser.add_argument("--processes", type=int, default=1, help="worker processes on this host")
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    run(args.concurrency, args.loglevel, not args.no_sweep, args.max_in_flight, args.process, args.processes)


if __name__ == "__main__":
    main()
