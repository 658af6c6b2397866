"""One asyncio event loop per worker process, shared by all task threads, so that one process
keeps hundreds of calls in flight with long-lived provider clients. The process's end closes them
(close_runtime, at exit)."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from judge.endpoints import Access
from judge.profiles import JudgeProfile
from judge.runner import Judge, RateLimiter, new_event_loop
from judge.settings import settings
from judge.tracing import traced

T = TypeVar("T")
log = logging.getLogger("pjudge.worker")


@dataclass(eq=False)
class _Held:
    judge: Judge
    users: int = 0  # batches using it now
    evicted: bool = False  # out of the cache: closed when its last user lets go


class AsyncRuntime:
    def __init__(self, max_judges: int | None = None) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pjudge-asyncio", daemon=True)
        self._thread.start()
        self._judges: OrderedDict[str, _Held] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self.max_judges = max_judges if max_judges is not None else settings().worker_max_judges
        # This process's share of the host's calls in flight (worker.processes); unset:
        # PJUDGE_WORKER_MAX_IN_FLIGHT (one process, or tasks run in-process).
        self.max_in_flight: int | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _make_judge(self, profile: JudgeProfile, access: Access, limiter: RateLimiter | None) -> Judge:
        in_flight = self.max_in_flight or settings().worker_max_in_flight
        judge = Judge(profile, max_in_flight=in_flight, limiter=limiter, access=access)
        judge.provider = traced(judge.provider)  # call spans when tracing is on (judge.tracing)
        return judge

    @contextlib.contextmanager
    def judge(self, profile: JudgeProfile, access: Access, limiter: RateLimiter | None = None) -> Iterator[Judge]:
        """A long-lived Judge per profile and access, for one batch (its provider client keeps its
        connections; two tenants' keys never share one); each task passes its own call cache.

        At most PJUDGE_WORKER_MAX_JUDGES are kept: the least recently used one that no batch is
        using is dropped and closed (its connections with it). A judge in use is never closed: one
        dropped while batches use it is closed when the last of them is done."""
        key = "\n".join((profile.model_dump_json(), access.cache_scope, repr(access), str(access.allow_private)))
        with self._lock:
            held = self._judges.get(key)
            if held is None:
                held = _Held(self.run(self._make_judge(profile, access, limiter)))
                self._judges[key] = held
            else:
                self._judges.move_to_end(key)
            held.users += 1
            idle = self._evict()
        self._close(idle)
        try:
            yield held.judge
        finally:
            with self._lock:
                held.users -= 1
                idle = [held] if held.evicted and held.users == 0 else self._evict()
            self._close(idle)

    def __len__(self) -> int:
        with self._lock:
            return len(self._judges)

    def _evict(self) -> list[_Held]:
        """Drop the least recently used judges beyond the cap (under the lock); returns those no
        batch uses (to close now). Judges in use stay until they are not."""
        idle: list[_Held] = []
        for key in list(self._judges):
            if len(self._judges) <= self.max_judges:
                break
            held = self._judges[key]
            if held.users == 0:
                del self._judges[key]
                held.evicted = True
                idle.append(held)
        return idle

    def _close(self, drop: list[_Held]) -> None:
        for held in drop:
            future = self.submit(held.judge.aclose())
            future.add_done_callback(_log_close_failure)

    def close(self, timeout: float = 5.0) -> None:
        """The end of this runtime (of its worker process): close every judge it keeps, in use or
        not (their provider clients and connections: aiohttp sessions left open were only dropped
        by the process's exit, with an "Unclosed client session" line each), then stop its event
        loop. Waits at most `timeout` seconds for the judges; call it once no batch runs any more."""
        with self._lock:
            held = list(self._judges.values())
            self._judges.clear()
        if self._loop.is_closed():
            return
        closing = [self.submit(h.judge.aclose()) for h in held]
        done, _ = concurrent.futures.wait(closing, timeout=timeout)
        for future in done:
            _log_close_failure(future)
        if held:
            log.info("closed %d of %d judges (their provider clients and connections)", len(done), len(held))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()


def _log_close_failure(future: concurrent.futures.Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.info("closing an unused judge failed (%s)", type(exc).__name__)


_runtime: AsyncRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> AsyncRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = AsyncRuntime()
            atexit.unregister(close_runtime)  # once, however often a runtime is started again
            atexit.register(close_runtime)  # the process's end closes its judges' connections
        return _runtime


def close_runtime(timeout: float = 5.0) -> None:
    """Close this process's runtime (AsyncRuntime.close), if it was started: at exit, and before a
    worker process ends itself with os._exit. A later `runtime()` starts a new one."""
    global _runtime
    with _runtime_lock:
        closing, _runtime = _runtime, None
    if closing is not None:
        closing.close(timeout)
