"""The batches a worker process is running, and the one thread that watches them.

Each task registers its batch here while it runs; its calls run as one asyncio task that can be
stopped from outside. Every MONITOR_INTERVAL_S the monitor
- stops the batches of jobs that were cancelled (or deleted): their in-flight calls end within a
  second or so, the task stores nothing and its message is acknowledged;
- reads which tenants have batches waiting in the queue lanes (worker.lanes), and when one does and
  no thread is free, stops a batch of a tenant above its share (PJUDGE_TENANT_SHARE of the
  threads) that has run for PREEMPT_AFTER_S: that batch keeps the answers it was paid for (the
  call cache) and goes back to the queue, so a hanging endpoint holds only its tenant's share.
A tenant alone may use every thread (nothing is waiting, nothing is stopped): single-tenant
throughput is as before, and no message goes round the queue while nobody else waits.

On SIGTERM (worker_shutting_down) the batches still running after PJUDGE_SHUTDOWN_GRACE_S are
stopped and handed back to the queue, so warm shutdown ends in seconds, whatever the endpoints do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("pjudge.worker")
T = TypeVar("T")
MONITOR_INTERVAL_S = 1.0
# A batch of a tenant above its share is handed back only after running this long: a healthy
# batch ends sooner than that by itself, and a waiting tenant then gets its thread anyway.
PREEMPT_AFTER_S = 2.0
CANCELLED, PREEMPTED, SHUTDOWN = "cancelled", "preempted", "shutdown"


class Stopped(Exception):
    """The batch was stopped from outside; `reason` says why (CANCELLED, PREEMPTED, SHUTDOWN)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Batch:
    job_id: str
    owner: str
    label: str
    started: float = field(default_factory=time.monotonic)
    reason: str | None = None
    _task: asyncio.Task[object] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def run(self, submit: Callable[[Coroutine[Any, Any, T]], concurrent.futures.Future[T]],
            coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the worker's event loop (`submit`) and wait for it; raises Stopped when
        stop() ended it. The coroutine has unwound (its calls cancelled) when this returns."""
        async def guarded() -> T:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            if self.reason is not None:  # stopped before it started
                coro.close()
                raise asyncio.CancelledError
            return await coro

        future = submit(guarded())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self.reason is not None:
                raise Stopped(self.reason) from None
            raise

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        task, loop = self._task, self._loop
        if task is not None and loop is not None:
            loop.call_soon_threadsafe(task.cancel)


class Running:
    """The running batches of this process. `configure` sets the thread count (and so each
    tenant's share); unconfigured (a task run in-process) nothing is capped or watched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: dict[int, Batch] = {}
        self._ids = itertools.count()
        self.concurrency: int | None = None
        self.share: int | None = None
        self.waiting: set[str] = set()
        self._waiting_now: Callable[[], set[str]] | None = None

    def configure(self, concurrency: int, tenant_share: float,
                  waiting_now: Callable[[], set[str]] | None = None) -> None:
        self.concurrency = concurrency
        self.share = max(1, int(concurrency * tenant_share))
        self._waiting_now = waiting_now

    def __len__(self) -> int:
        with self._lock:
            return len(self._batches)

    def counts(self) -> Counter[str]:
        """Running batches per owner, not counting those being stopped."""
        with self._lock:
            return Counter(b.owner for b in self._batches.values() if b.reason is None)

    def enter(self, job_id: str, owner: str, label: str) -> tuple[int, Batch] | None:
        """Register a batch about to run, or None when its owner is at its share while another
        tenant's batches wait (the task then hands its message back)."""
        if self.share is not None and self.counts()[owner] >= self.share and self._others_want(owner):
            return None
        batch = Batch(job_id, owner, label)
        with self._lock:
            key = next(self._ids)
            self._batches[key] = batch
        return key, batch

    def leave(self, key: int) -> None:
        with self._lock:
            self._batches.pop(key, None)

    def _others_want(self, owner: str) -> bool:
        """Another tenant below its share has batches waiting (one at its share too would hand
        its own back in turn: the two would send each other's messages round the queue)."""
        # Asked afresh (one round trip): the monitor's view is up to a second old, and a stale
        # "someone waits" would send this tenant's messages round the queue for that second.
        if self._waiting_now is not None:
            try:
                self.waiting = self._waiting_now()
            except Exception as exc:  # noqa: BLE001 - the broker is away: run it (the safe default)
                log.debug("waiting tenants unknown (%s)", type(exc).__name__)
                return False
        counts = self.counts()
        return any(other != owner and counts[other] < (self.share or 0) for other in self.waiting)

    def snapshot(self) -> list[Batch]:
        with self._lock:
            return list(self._batches.values())

    def stop_all(self, reason: str) -> int:
        batches = [b for b in self.snapshot() if b.reason is None]
        for batch in batches:
            batch.stop(reason)
        return len(batches)

    def stop_cancelled(self, statuses: dict[str, str], active: tuple[str, ...]) -> int:
        """Stop the batches whose job is no longer active (cancelled, or gone)."""
        stopped = 0
        for batch in self.snapshot():
            if batch.reason is None and statuses.get(batch.job_id) not in active:
                log.info("batch %s: job %s is %s; stopping its calls", batch.label, batch.job_id,
                         statuses.get(batch.job_id, "gone"))
                batch.stop(CANCELLED)
                stopped += 1
        return stopped

    def preempt(self, waiting: set[str], now: float | None = None) -> int:
        """Free threads for waiting tenants below their share by stopping batches of tenants above
        theirs (oldest first, each running at least PREEMPT_AFTER_S); returns how many."""
        if self.share is None or self.concurrency is None:
            return 0
        now = time.monotonic() if now is None else now
        counts = self.counts()
        free = self.concurrency - sum(counts.values())  # a batch being stopped frees its thread soon
        wanting = [owner for owner in waiting if counts[owner] < self.share]
        need = len(wanting) - free
        stopped = 0
        while need > 0:
            over = [b for b in self.snapshot() if b.reason is None and counts[b.owner] > self.share
                    and now - b.started >= PREEMPT_AFTER_S and b.owner not in wanting]
            if not over:
                break
            heaviest = max(counts[b.owner] for b in over)
            victim = min((b for b in over if counts[b.owner] == heaviest), key=lambda b: b.started)
            log.info("batch %s of tenant %s… handed back: %d of its batches run while another tenant waits",
                     victim.label, victim.owner[:8], counts[victim.owner])
            victim.stop(PREEMPTED)
            counts[victim.owner] -= 1
            need -= 1
            stopped += 1
        return stopped


RUNNING = Running()


def monitor_once(running: Running, job_statuses: Callable[[list[str]], dict[str, str]],
                 waiting_owners: Callable[[], set[str]], active: tuple[str, ...]) -> None:
    batches = running.snapshot()
    if batches:
        running.stop_cancelled(job_statuses([b.job_id for b in batches]), active)
    running.waiting = waiting_owners()
    running.preempt(running.waiting)


def start_monitor(running: Running, job_statuses: Callable[[list[str]], dict[str, str]],
                  waiting_owners: Callable[[], set[str]], active: tuple[str, ...],
                  interval_s: float = MONITOR_INTERVAL_S) -> threading.Event:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                monitor_once(running, job_statuses, waiting_owners, active)
            except Exception as exc:  # noqa: BLE001 - the database or broker may be away for a while
                log.info("batch monitor skipped a round (%s)", type(exc).__name__)

    threading.Thread(target=loop, name="pjudge-batch-monitor", daemon=True).start()
    return stop


def stop_after_grace(running: Running, grace_s: float) -> threading.Thread:
    """On shutdown: after `grace_s`, hand every batch still running back to the queue."""
    def later() -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and len(running):
            time.sleep(0.1)
        stopped = running.stop_all(SHUTDOWN)
        if stopped:
            log.warning("shutting down: %d running batch(es) handed back to the queue", stopped)

    thread = threading.Thread(target=later, name="pjudge-shutdown", daemon=True)
    thread.start()
    return thread
