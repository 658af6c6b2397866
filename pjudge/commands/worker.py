"""`pjudge worker`: a supervised Celery worker process for the service."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import click

from pjudge.common import handle_errors


@click.command("worker")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Tasks run at once (threads sharing one asyncio loop; each task's calls run concurrently).")
@click.option("--loglevel", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="Re-send batches of jobs that made no progress for two minutes.")
@handle_errors
def worker_command(concurrency: int, loglevel: str, sweep: bool) -> None:
    """Run a worker: takes judging tasks from Redis (REDIS_URL, else the embedded server) and stores
    verdicts in the database (DATABASE_URL, else SQLite in the user data directory).

    The worker process is supervised: it is restarted when it asks to be (after a broker outage)
    or crashes; Ctrl-C or SIGTERM stops both.
    """
    from worker.broker import broker_url
    from worker.main import RESTART_EXIT_CODE

    broker_url()  # with no REDIS_URL, start the embedded Redis here so it outlives restarts
    args = [sys.executable, "-m", "worker.main", f"--concurrency={concurrency}", f"--loglevel={loglevel}"]
    if not sweep:
        args.append("--no-sweep")
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failures = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(args)
        code = child.wait()
        if stopping:
            sys.exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)
        if code == RESTART_EXIT_CODE:
            failures = 0
            continue
        # A crash: restart with a growing pause, reset once a process has run for a while.
        failures = 0 if time.monotonic() - started > 60 else failures + 1
        delay = min(30.0, 0.5 * 2 ** failures)
        click.echo(f"worker process exited with code {code}; restarting in {delay:.1f}s", err=True)
        time.sleep(delay)
