"""`pjudge worker`: one event-loop worker process per core, each supervised on its own.

A worker process runs all its calls on one asyncio loop, and one GIL binds that loop to one core:
at about 1 ms of CPU per call on the SDK transport, one process cannot keep its in-flight bound
busy against a fast server, and a second core would do nothing. So `pjudge worker` runs N worker
processes (worker.main), N = --processes, else PJUDGE_WORKER_PROCESSES, else os.cpu_count().

The host's budgets are split across them (`split`), so that a host runs what it was told whatever
N is:
- threads (--concurrency, per host; default 4 per process): evenly, the first processes taking one
  more when it does not divide. Each process needs two threads, so that a tenant at its share
  (PJUDGE_TENANT_SHARE of a process's threads) leaves one to another tenant: N is lowered to
  threads // 2 when there are fewer (one process for 2 or 3 threads).
- calls in flight (PJUDGE_WORKER_MAX_IN_FLIGHT, per host): evenly in the same way, at least 1
  each.
- the sweeper runs in the first process only: one per host is enough (and several hosts' sweepers
  may run at once: each touches a job before re-sending its batches, and re-sends are idempotent).
Rate limits need no split: they are token buckets in Redis (worker.ratelimit), taken by every
process of every host. Fair scheduling (worker.batches), warm-up, the watchdog and the shutdown
grace are each process's own, as with one process.

The supervisor (`Supervisor`) starts every process, restarts each on its own when it exits (at
once when it asks to, after the broker came back; after a growing pause when it crashed, e.g. a
kill -9: its unacknowledged tasks return to the queue by the visibility timeout), and on SIGTERM
or SIGINT passes the signal to all of them and waits while each lets its batches finish for
PJUDGE_SHUTDOWN_GRACE_S and hands the rest back to the queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

THREADS_PER_PROCESS = 4  # the default --concurrency is this many per process
MIN_THREADS = 2  # per process: a tenant's share must leave a thread to another tenant
STOP_WAIT_EXTRA_S = 60.0  # beyond the grace, before a process still stopping is killed


@dataclass(frozen=True)
class Share:
    """One worker process's part of the host's budgets."""

    index: int
    processes: int
    threads: int
    max_in_flight: int
    sweep: bool


def default_processes() -> int:
    from judge.settings import settings

    return settings().worker_processes or os.cpu_count() or 1


def _even(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def split(processes: int | None = None, threads: int | None = None, max_in_flight: int | None = None,
          sweep: bool = True) -> list[Share]:
    """The processes to run and each one's threads, calls in flight and sweeper (see the module doc)."""
    from judge.settings import settings

    wanted = max(1, processes or default_processes())
    threads = threads or THREADS_PER_PROCESS * wanted
    in_flight = max_in_flight or settings().worker_max_in_flight
    count = max(1, min(wanted, threads // MIN_THREADS))
    return [Share(index=i, processes=count, threads=max(1, _even(threads, count, i)),
                  max_in_flight=max(1, _even(in_flight, count, i)), sweep=sweep and i == 0)
            for i in range(count)]


def command(share: Share, loglevel: str) -> list[str]:
    args = [sys.executable, "-m", "worker.main", f"--concurrency={share.threads}",
            f"--max-in-flight={share.max_in_flight}", f"--process={share.index}", f"--processes={share.processes}",
            f"--loglevel={loglevel}"]
    if not share.sweep:
        args.append("--no-sweep")
    return args


@dataclass
class _Slot:
    share: Share
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    code: int | None = None


class Supervisor:
    """Runs the worker processes of `shares` until SIGTERM/SIGINT; `run` returns the exit code."""

    def __init__(self, shares: list[Share], loglevel: str, restart_code: int, grace_s: float,
                 echo: Callable[[str], Any] | None = None, poll_s: float = 0.2):
        self.slots = [_Slot(share, command(share, loglevel)) for share in shares]
        self.restart_code, self.grace_s, self.poll_s = restart_code, grace_s, poll_s
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.stopping: int | None = None  # the signal that stops us

    def _start(self, slot: _Slot) -> None:
        slot.started, slot.restart_at, slot.code = time.monotonic(), None, None
        slot.proc = subprocess.Popen(slot.args)
        if self.stopping is not None:  # the signal came while this one was starting
            slot.proc.send_signal(self.stopping)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = signum
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signum)

    def _exited(self, slot: _Slot, code: int) -> None:
        index, count = slot.share.index + 1, slot.share.processes
        slot.code = code
        if code == self.restart_code:
            slot.failures, slot.restart_at = 0, time.monotonic()
            return
        # A crash: restart with a growing pause, reset once the process has run for a while.
        slot.failures = 0 if time.monotonic() - slot.started > 60 else slot.failures + 1
        delay = min(30.0, 0.5 * 2 ** slot.failures)
        slot.restart_at = time.monotonic() + delay
        self.echo(f"worker process {index} of {count} exited with code {code}; restarting in {delay:.1f}s")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in self.slots:
            self._start(slot)
        while self.stopping is None:
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is not None:
                    if now >= slot.restart_at and self.stopping is None:
                        self._start(slot)
                    continue
                code = slot.proc.poll() if slot.proc is not None else None
                if code is not None:
                    self._exited(slot, code)
            time.sleep(self.poll_s)
        return self._wait_all()

    def _wait_all(self) -> int:
        """Each process has the signal: wait while they let their batches finish (the grace) and
        hand the rest back; kill one that is still there long after that (its tasks return to the
        queue by the visibility timeout)."""
        deadline = time.monotonic() + self.grace_s + STOP_WAIT_EXTRA_S
        codes = []
        for slot in self.slots:
            if slot.proc is None or slot.restart_at is not None:
                continue  # between a crash and its restart: nothing runs
            try:
                code = slot.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.echo(f"worker process {slot.share.index + 1} still stopping after "
                          f"{self.grace_s + STOP_WAIT_EXTRA_S:.0f}s; killing it")
                slot.proc.kill()
                code = slot.proc.wait()
            codes.append(code)
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        return next((code for code in codes if code not in clean), 0)
