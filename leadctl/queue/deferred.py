"""Deferred leads in Redis: a sorted set per stream partition, lead ids scored by when they may go.

A worker that defers a lead (quiet hours, frequency cap) adds it here before acknowledging its
stream entry, so the lead leaves the stream and the workers never spin on it; due leads are moved
back into their partition's stream by one Lua call (atomic: a lead is in the set or in the stream).
The set lives in its partition's slot, so the call is legal on Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from leadctl.connections import AsyncRedisClient, RedisClient
from leadctl.queue import keys
from leadctl.queue.streams import LEAD_FIELD

PROMOTE_EVERY_S = 1.0

_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
    redis.call('XADD', KEYS[2], '*', ARGV[3], id)
    redis.call('ZREM', KEYS[1], id)
end
return #due
"""


class DelayedLeads:
    """One channel's deferred leads, over its stream partitions."""

    def __init__(self, client: AsyncRedisClient, namespace: str, channel: str, partitions: int, limit: int):
        self.client = client
        self.namespace = namespace
        self.channel = channel
        self.partitions = partitions
        self.limit = limit
        self._script = client.register_script(_PROMOTE)
        self._promoted = float("-inf")

    def _key(self, lead_id: int) -> str:
        return keys.delayed(self.namespace, self.channel, keys.partition_of(lead_id, self.partitions))

    async def add(self, leads: Sequence[tuple[int, float]]) -> None:
        """Keep (lead id, epoch second it may go) for later, in one round trip."""
        if not leads:
            return
        pipe = self.client.pipeline(transaction=False)
        for lead_id, not_before in leads:
            pipe.zadd(self._key(lead_id), {str(lead_id): not_before})
        await pipe.execute()

    async def promote(self, now: float) -> int:
        """Move due leads back to their streams; throttled to once a second unless a full batch moved."""
        if time.monotonic() - self._promoted < PROMOTE_EVERY_S:
            return 0
        moved = 0
        full = False
        for partition in range(self.partitions):
            count = int(
                await self._script(
                    keys=[
                        keys.delayed(self.namespace, self.channel, partition),
                        keys.stream(self.namespace, self.channel, partition),
                    ],
                    args=[now, self.limit, LEAD_FIELD],
                )
            )
            moved += count
            full = full or count >= self.limit
        self._promoted = float("-inf") if full else time.monotonic()
        return moved


def due(client: RedisClient, namespace: str, channel: str, partitions: int, now: float) -> int:
    """How many of a channel's deferred leads may go at ``now`` (a batch run starts workers for them)."""
    pipe = client.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.zcount(keys.delayed(namespace, channel, partition), "-inf", now)
    return sum(int(n) for n in pipe.execute())
