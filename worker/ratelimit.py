"""Per-provider request and token limits shared by every worker through Redis (a token bucket
per minute, refilled continuously, checked and taken atomically by a Lua script)."""

from __future__ import annotations

import asyncio
import time

from judge.profiles import JudgeProfile

# KEYS[1] bucket; ARGV: capacity per minute, amount wanted, now (s). Returns seconds to wait (0 = taken).
_BUCKET = """
local capacity = tonumber(ARGV[1])
local wanted = math.min(tonumber(ARGV[2]), capacity)
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
level = math.min(capacity, level + (now - at) * capacity / 60.0)
if level >= wanted then
  redis.call('HSET', KEYS[1], 'level', level - wanted, 'at', now)
  redis.call('EXPIRE', KEYS[1], 120)
  return '0'
end
redis.call('HSET', KEYS[1], 'level', level, 'at', now)
redis.call('EXPIRE', KEYS[1], 120)
return tostring((wanted - level) * 60.0 / capacity)
"""


class RedisRateLimiter:
    def __init__(self, url: str):
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(url)
        self._script = self._client.register_script(_BUCKET)

    async def _take(self, bucket: str, capacity: int, amount: int) -> None:
        while True:
            wait = float(await self._script(keys=[bucket], args=[capacity, amount, time.time()]))
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, 5.0))

    async def acquire(self, profile: JudgeProfile, tokens: int) -> None:
        scope = f"pjudge:rate:{profile.provider}:{profile.base_url or ''}:{profile.model}"
        if profile.requests_per_minute:
            await self._take(f"{scope}:rpm", profile.requests_per_minute, 1)
        if profile.tokens_per_minute:
            await self._take(f"{scope}:tpm", profile.tokens_per_minute, tokens)
