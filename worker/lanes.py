"""Queue lanes: tenants take turns instead of waiting in one line.

Every worker consumes the legacy queue and `PJUDGE_LANES` lane queues. A job's batches go to its
owner's lane; an owner keeps its lane while it holds queued batches (and for LANE_HOLD_S after it
last sent some), and a new owner takes a lane that is empty and not held. kombu's Redis consumer
takes from its queues round-robin (it moves the queue that just delivered to the end of its
cycle), so a one-batch job of tenant B is taken next, not after tenant A's thousand batches.

With more tenants queued at once than lanes, some share a lane (FIFO between them): fairness
degrades, nothing is lost. A lane is only a routing choice for a message; every message still
carries its job and batch, and the sweeper re-sends whatever is missing wherever it likes.
"""

from __future__ import annotations

import time
from typing import Any

LANE_PREFIX = "pjudge.lane."
LANE_HOLD_S = 30
_OWNER_OF_LANE = "pjudge:lane-owner"  # lane index -> owner
_LANE_OF_OWNER = "pjudge:lane-of"  # owner -> lane index
_LANE_USED_AT = "pjudge:lane-at"  # lane index -> when its owner last sent batches

# One round trip, atomic: two API processes never hand the same free lane to two owners.
_ASSIGN = """
local owner, n, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local mine = redis.call('HGET', KEYS[2], owner)
if mine and tonumber(mine) < n and redis.call('HGET', KEYS[1], mine) == owner then
  redis.call('HSET', KEYS[3], mine, now)
  return tonumber(mine)
end
for i = 0, n - 1 do
  local holder = redis.call('HGET', KEYS[1], i)
  local used = tonumber(redis.call('HGET', KEYS[3], i) or '0')
  if not holder or (redis.call('LLEN', prefix .. i) == 0 and now - used > hold) then
    redis.call('HSET', KEYS[1], i, owner)
    redis.call('HSET', KEYS[2], owner, i)
    redis.call('HSET', KEYS[3], i, now)
    return i
  end
end
-- No lane free: share the shortest, whose holder stays (this owner looks again next time).
local best, shortest = 0, nil
for i = 0, n - 1 do
  local length = redis.call('LLEN', prefix .. i)
  if shortest == nil or length < shortest then
    best, shortest = i, length
  end
end
return best
"""


def lane_queues(count: int | None = None) -> list[str]:
    if count is None:
        from judge.settings import settings

        count = settings().lanes
    return [f"{LANE_PREFIX}{i}" for i in range(count)]


def all_queues(legacy: str) -> list[str]:
    """What a worker consumes: the legacy queue (messages sent before lanes, or without a broker
    to ask), then the lanes."""
    return [legacy, *lane_queues()]


def assign_lane(client: Any, owner: str, count: int | None = None) -> str:
    """The lane queue for `owner`'s batches (see the module doc)."""
    queues = lane_queues(count)
    index = client.eval(_ASSIGN, 3, _OWNER_OF_LANE, _LANE_OF_OWNER, _LANE_USED_AT,
                        owner, len(queues), LANE_PREFIX, int(time.time()), LANE_HOLD_S)
    return queues[int(index)]


UNKNOWN_OWNER = "?"  # batches in the legacy queue: whose they are is not known without reading them


def waiting_owners(client: Any, legacy: str, count: int | None = None) -> set[str]:
    """The owners with batches waiting in a queue: one round trip."""
    queues = lane_queues(count)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(_OWNER_OF_LANE)
    pipe.llen(legacy)
    for queue in queues:
        pipe.llen(queue)
    holders, legacy_length, *lengths = pipe.execute()
    holder = {_text(key): _text(value) for key, value in holders.items()}
    owners = {holder.get(str(i)) or UNKNOWN_OWNER for i, length in enumerate(lengths) if length}
    if legacy_length:
        owners.add(UNKNOWN_OWNER)
    return owners


def backlog(client: Any, legacy: str) -> int:
    """Messages waiting in all the queues a worker consumes."""
    pipe = client.pipeline(transaction=False)
    for queue in all_queues(legacy):
        pipe.llen(queue)
    return int(sum(pipe.execute()))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
