"""Failed authentications per client address: after `limit` failures within a minute the address
gets 429 (with Retry-After) on every authenticated route until the oldest failure is a minute old,
unless it sends a key known to be good, so keys cannot be guessed at line rate and a flood of bad
keys costs no database lookups. Successes do not reset the count (a valid key from a shared
address must not wipe out a flood from others), but a valid key is not locked out by others'
failures from the same address (a NAT, a proxy): the keys of PJUDGE_API_KEYS, and the hashes of
keys that authenticated within the last KNOWN_FOR seconds (at most MAX_KNOWN, in memory), still
pass while the address is throttled. In memory, per API process; the client address is the WSGI
REMOTE_ADDR (behind a proxy, the proxy must set it)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

WINDOW = 60.0
MAX_ADDRESSES = 100_000  # beyond, addresses with no failure in the window are forgotten
KNOWN_FOR = 3600.0  # seconds a key hash that authenticated stays known to be good
MAX_KNOWN = 10_000  # beyond, the oldest known hashes are forgotten


class AuthThrottle:
    def __init__(self, limit: int):
        self.limit = limit
        self._failures: dict[str, deque[float]] = {}
        self._known: OrderedDict[str, float] = OrderedDict()  # key hash -> when it last authenticated
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

    def succeeded(self, key_hash: str) -> None:
        """Remember that the key with this hash authenticated (it passes a throttled address)."""
        if self.limit <= 0:
            return
        with self._lock:
            self._known[key_hash] = time.monotonic()
            self._known.move_to_end(key_hash)
            while len(self._known) > MAX_KNOWN:
                self._known.popitem(last=False)

    def known(self, key_hash: str) -> bool:
        """Whether the key with this hash authenticated within the last KNOWN_FOR seconds."""
        with self._lock:
            when = self._known.get(key_hash)
            return when is not None and time.monotonic() - when < KNOWN_FOR

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._known.pop(key_hash, None)
