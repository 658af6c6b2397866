"""Failed authentications per client address: after `limit` failures within a minute the address
gets 429 (with Retry-After) on every authenticated route until the oldest failure is a minute old,
whatever key it sends, so keys cannot be guessed at line rate. Successes do not reset the count (a
valid key from a shared address must not wipe out a flood from others). In memory, per API
process; the client address is the WSGI REMOTE_ADDR (behind a proxy, the proxy must set it)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

WINDOW = 60.0
MAX_ADDRESSES = 100_000  # beyond, addresses with no failure in the window are forgotten


class AuthThrottle:
    def __init__(self, limit: int):
        self.limit = limit
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is not None:
            while failures and failures[0] <= now - WINDOW:
                failures.popleft()
            if not failures:
                del self._failures[address]
                return None
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds the address must wait before its next attempt, or None when it may try."""
        if self.limit <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            failures = self._recent(address, now)
            if failures is None or len(failures) < self.limit:
                return None
            return max(1, math.ceil(failures[0] + WINDOW - now))

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= MAX_ADDRESSES:
                for known in list(self._failures):
                    self._recent(known, now)
            failures = self._failures.setdefault(address, deque(maxlen=self.limit))
            failures.append(now)
