"""One asyncio event loop per worker process, shared by all task threads, so that one process
keeps hundreds of calls in flight with long-lived provider clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from judge.profiles import JudgeProfile
from judge.runner import Judge, new_event_loop

T = TypeVar("T")
MAX_IN_FLIGHT = int(os.environ.get("PJUDGE_WORKER_MAX_IN_FLIGHT", "256"))


class AsyncRuntime:
    def __init__(self) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pjudge-asyncio", daemon=True)
        self._thread.start()
        self._judges: dict[str, Judge] = {}
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _make_judge(self, profile: JudgeProfile, limiter: Any) -> Judge:
        return Judge(profile, max_in_flight=MAX_IN_FLIGHT, limiter=limiter)

    def judge_for(self, profile: JudgeProfile, limiter: Any = None) -> Judge:
        """A long-lived Judge per profile (its provider client keeps its connections); each task
        passes its own call cache."""
        key = profile.model_dump_json()
        with self._lock:
            judge = self._judges.get(key)
            if judge is None:
                judge = self.run(self._make_judge(profile, limiter))
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
