"""The simulator's prompt caches, reporting cached tokens the way each provider does, on the
simulator's own token count (`llm_sim.server._tokens`: 4 characters a token).

- OpenAI (automatic): a prompt of `min_tokens` (1,024) tokens or more is cached by prefix in
  128-token steps; a later prompt reads the longest step-aligned prefix (of at least 1,024
  tokens) that a prompt before it on this server shared with it. `prompt_cache_key` only routes
  requests to a machine on OpenAI's side: this one machine sees every prefix, so it is ignored.
- Anthropic (explicit): only what ends at a `cache_control` breakpoint is cached. A prefix under
  the minimum cacheable length (1,024 tokens for most Claude models, more for some) is neither
  written nor read; else its first use writes it (`cache_creation_input_tokens`) and later ones
  read it (`cache_read_input_tokens`), each read refreshing its 5-minute lifetime.

A prefix is readable as soon as the request that wrote it is answered (the simulator answers at
once after its latency): concurrent first uses may each write on the real services.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

TOKEN_CHARS = 4  # llm_sim.server._tokens
OPENAI_STEP = 128


class PrefixStore:
    """Hashes of cached prefixes with their expiry; the oldest go first past `capacity`."""

    def __init__(self, ttl_s: float, capacity: int = 1_000_000, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.capacity, self.clock = ttl_s, capacity, clock
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def hit(self, key: bytes) -> bool:
        """True when `key` is cached and alive; a hit refreshes its lifetime."""
        expiry = self._expiry.get(key)
        if expiry is None or expiry < self.clock():
            return False
        self.put(key)
        return True

    def put(self, key: bytes) -> None:
        self._expiry[key] = self.clock() + self.ttl_s
        self._expiry.move_to_end(key)
        while len(self._expiry) > self.capacity:
            self._expiry.popitem(last=False)


def _key(scope: str, text: str) -> bytes:
    return hashlib.sha256(f"{scope}\x1e{text}".encode()).digest()


class PromptCaches:
    def __init__(self, openai_min_tokens: int = 1024, anthropic_min_tokens: int = 1024, ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.openai_min_tokens = openai_min_tokens
        self.anthropic_min_tokens = anthropic_min_tokens
        self._openai = PrefixStore(ttl_s, clock=clock)
        self._anthropic = PrefixStore(ttl_s, clock=clock)

    def automatic(self, scope: str, prompt: str) -> int:
        """OpenAI: the cached tokens of `prompt` (0, or a multiple of 128 of at least the minimum)."""
        tokens = len(prompt) // TOKEN_CHARS
        steps = range(self.openai_min_tokens, tokens + 1, OPENAI_STEP)
        cached = 0
        for step in steps:  # prefixes are nested: the first miss ends the hits
            if not self._openai.hit(_key(scope, prompt[:step * TOKEN_CHARS])):
                break
            cached = step
        for step in steps:
            self._openai.put(_key(scope, prompt[:step * TOKEN_CHARS]))
        return cached

    def explicit(self, scope: str, prefix: str | None) -> tuple[int, int]:
        """Anthropic: (tokens read, tokens written) for the prefix ending at the last breakpoint."""
        if prefix is None:
            return 0, 0
        tokens = -(-len(prefix) // TOKEN_CHARS)
        if tokens < self.anthropic_min_tokens:
            return 0, 0
        key = _key(scope, prefix)
        if self._anthropic.hit(key):
            return tokens, 0
        self._anthropic.put(key)
        return 0, tokens
