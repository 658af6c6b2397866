"""`pjudge worker`: supervised Celery worker processes for the service, one per core by default
(worker.processes)."""

from __future__ import annotations

import sys

import click

from pjudge.common import handle_errors


@click.command("worker")
@click.option("--processes", default=None, type=click.IntRange(1, 256),
              help="Worker processes, each with its own event loop (one core's worth of calls) "
                   "[default: PJUDGE_WORKER_PROCESSES, else one per core].")
@click.option("--concurrency", default=None, type=click.IntRange(1, 1024),
              help="Tasks run at once on this host, split across the processes (threads sharing each "
                   "process's asyncio loop; each task's calls run concurrently); each process needs 2 "
                   "[default: 4 per process].")
@click.option("--loglevel", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="Re-send batches of jobs that made no progress for two minutes (in the first process).")
@handle_errors
def worker_command(processes: int | None, concurrency: int | None, loglevel: str, sweep: bool) -> None:
    """Run the workers of this host: take judging tasks from Redis (REDIS_URL, else the embedded
    server) and store verdicts in the database (DATABASE_URL, else SQLite in the user data directory).

    The threads (--concurrency) and the calls in flight (PJUDGE_WORKER_MAX_IN_FLIGHT) are this
    host's: each process gets an even share. Each process is supervised on its own: it is restarted
    when it asks to be (after a broker outage) or crashes; Ctrl-C or SIGTERM stops them all, each
    after its shutdown grace (PJUDGE_SHUTDOWN_GRACE_S).
    """
    from judge.settings import settings
    from worker.broker import broker_url
    from worker.main import RESTART_EXIT_CODE
    from worker.processes import Supervisor, split
    from worker.telemetry import serve_metrics

    broker_url()  # with no REDIS_URL, start the embedded Redis here so it outlives restarts
    serve_metrics()  # PJUDGE_WORKER_METRICS_PORT: the processes' metrics (multiprocess mode)
    shares = split(processes, concurrency, sweep=sweep)
    supervisor = Supervisor(shares, loglevel, RESTART_EXIT_CODE, settings().shutdown_grace_s,
                            echo=lambda line: click.echo(line, err=True))
    sys.exit(supervisor.run())
