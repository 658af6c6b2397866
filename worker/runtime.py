"""One asyncio event loop per worker process, shared by all task threads, so that one process
keeps hundreds of calls in flight with long-lived provider clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from judge.endpoints import Access
from judge.profiles import JudgeProfile
from judge.runner import Judge, new_event_loop
from judge.settings import settings

T = TypeVar("T")


class AsyncRuntime:
    def __init__(self) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pjudge-asyncio", daemon=True)
        self._thread.start()
        self._judges: dict[str, Judge] = {}
        self._lock = threading.Lock()
        # This process's share of the host's calls in flight (worker.processes); unset:
        # PJUDGE_WORKER_MAX_IN_FLIGHT (one process, or tasks run in-process).
        self.max_in_flight: int | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _make_judge(self, profile: JudgeProfile, access: Access, limiter: Any) -> Judge:
        in_flight = self.max_in_flight or settings().worker_max_in_flight
        return Judge(profile, max_in_flight=in_flight, limiter=limiter, access=access)

    def judge_for(self, profile: JudgeProfile, access: Access, limiter: Any = None) -> Judge:
        """A long-lived Judge per profile and access (its provider client keeps its connections;
        two tenants' keys never share one); each task passes its own call cache."""
        key = "\n".join((profile.model_dump_json(), access.cache_scope, repr(access), str(access.allow_private)))
        with self._lock:
            judge = self._judges.get(key)
            if judge is None:
                judge = self.run(self._make_judge(profile, access, limiter))
                self._judges[key] = judge
        return judge


_runtime: AsyncRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> AsyncRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = AsyncRuntime()
        return _runtime
