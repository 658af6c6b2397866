"""The batches a worker process is running, and the one thread that watches them.

Each task registers its batch here while it runs; its calls run as one asyncio task that can be
stopped from outside. Every MONITOR_INTERVAL_S the monitor
- stops the batches of jobs that were cancelled (or deleted): their in-flight calls end within a
  second or so, the task stores nothing and its message is acknowledged;
- reads which tenants have batches waiting in the queue lanes (worker.lanes), and hands threads
  back to them. Each tenant's fair share is the threads over the active tenants (running or
  waiting; at most PJUDGE_TENANT_SHARE of them, at least one). When a waiting tenant below its
  share finds no free thread, a batch of a tenant above its share is stopped; when the waiting
  tenant has nothing running at all (more tenants than threads: every holder is at its share), a
  batch of the tenant holding the most threads is. Either way only a batch that has run for
  PREEMPT_AFTER_S: it keeps the answers it was paid for (the call cache) and goes back to the
  queue. So a hanging endpoint holds only its tenant's share, and a tenant with nothing running
  gets a thread within seconds however many tenants hang.
A tenant alone may use every thread (nothing is waiting, nothing is stopped): single-tenant
throughput is as before, and no message goes round the queue while nobody else waits. Tenants at
equal shares keep their threads (nobody below the share waits, nobody is stopped); only with more
tenants than threads do they take turns, each batch running PREEMPT_AFTER_S at least.

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
        self.cap: int | None = None  # PJUDGE_TENANT_SHARE of the threads
        self.waiting: set[str] = set()
        self.handed_back: dict[str, float] = {}  # owner -> when a batch of its was last stopped for another
        self._waiting_now: Callable[[], set[str]] | None = None

    def configure(self, concurrency: int, tenant_share: float,
                  waiting_now: Callable[[], set[str]] | None = None) -> None:
        self.concurrency = concurrency
        self.cap = max(1, int(concurrency * tenant_share))
        self._waiting_now = waiting_now

    def __len__(self) -> int:
        with self._lock:
            return len(self._batches)

    def counts(self) -> Counter[str]:
        """Running batches per owner, not counting those being stopped."""
        with self._lock:
            return Counter(b.owner for b in self._batches.values() if b.reason is None)

    def share(self, counts: Counter[str], waiting: set[str]) -> int:
        """Threads each tenant keeps while another waits: the threads over the active tenants
        (running or waiting), at most PJUDGE_TENANT_SHARE of them, at least one."""
        if self.concurrency is None or self.cap is None:
            return 0
        active = {owner for owner, n in counts.items() if n > 0} | waiting
        return max(1, min(self.cap, self.concurrency // max(1, len(active))))

    def enter(self, job_id: str, owner: str, label: str) -> tuple[int, Batch] | None:
        """Register a batch about to run, or None when its owner is at its share while another
        tenant below its share waits (the task then hands its message back)."""
        if self.concurrency is not None and self._others_want(owner):
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
        """`owner` is at its share and another tenant below its share has batches waiting (one at
        its share too would hand its own back in turn: the two would send each other's messages
        round the queue)."""
        if self.counts()[owner] == 0 and not self._just_handed_back(owner):
            return False  # below any share (one at least): no need to ask who waits
        # Asked afresh (one round trip): the monitor's view is up to a second old, and a stale
        # "someone waits" would send this tenant's messages round the queue for that second.
        if self._waiting_now is not None:
            try:
                self.waiting = self._waiting_now()
            except Exception as exc:  # noqa: BLE001 - the broker is away: run it (the safe default)
                log.debug("waiting tenants unknown (%s)", type(exc).__name__)
                return False
        counts = self.counts()
        share = self.share(counts, self.waiting | {owner})
        if counts[owner] >= share:
            return any(other != owner and counts[other] < share for other in self.waiting)
        # With more tenants than threads, a tenant whose batch was just stopped for another has had
        # its turn: the thread is for one that has waited with nothing running.
        if counts[owner] == 0 and self._just_handed_back(owner):
            return any(other != owner and counts[other] == 0 and not self._just_handed_back(other)
                       for other in self.waiting)
        return False

    def _just_handed_back(self, owner: str, now: float | None = None) -> bool:
        """A batch of `owner` was stopped for another tenant less than PREEMPT_AFTER_S ago."""
        when = self.handed_back.get(owner)
        now = time.monotonic() if now is None else now
        return when is not None and now - when < PREEMPT_AFTER_S

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
        """Free a thread for each waiting tenant below its share when none is free: stop a batch
        of a tenant above its share or, for a waiting tenant with nothing running, of the tenant
        holding the most threads (heaviest first, then oldest; each running at least
        PREEMPT_AFTER_S). Returns how many were stopped."""
        if self.concurrency is None:
            return 0
        now = time.monotonic() if now is None else now
        counts = self.counts()
        share = self.share(counts, waiting)
        free = self.concurrency - sum(counts.values())  # a batch being stopped frees its thread soon
        # A tenant whose batch was just stopped for another waits its turn (else the two would
        # stop each other's batches).
        wanting = {owner for owner in waiting if counts[owner] < share and not self._just_handed_back(owner, now)}
        need = len(wanting) - free
        stopped = 0
        while need > 0:
            starving = any(counts[owner] == 0 for owner in wanting)
            most = max(counts.values(), default=0)
            over = [b for b in self.snapshot() if b.reason is None and b.owner not in wanting
                    and now - b.started >= PREEMPT_AFTER_S
                    and (counts[b.owner] > share or (starving and counts[b.owner] == most))]
            if not over:
                break
            heaviest = max(counts[b.owner] for b in over)
            victim = min((b for b in over if counts[b.owner] == heaviest), key=lambda b: b.started)
            log.info("batch %s of tenant %s… handed back: %d of its batches run while another tenant waits",
                     victim.label, victim.owner[:8], counts[victim.owner])
            victim.stop(PREEMPTED)
            self.handed_back[victim.owner] = now
            counts[victim.owner] -= 1
            # The waiting tenant it was for now has a thread coming (one at a time: whichever
            # batch the free thread takes, the next round sees the new counts).
            wanting.discard(min(wanting, key=lambda owner: counts[owner]))
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
