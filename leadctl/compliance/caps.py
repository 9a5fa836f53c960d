"""Frequency caps: at most N messages per contact per channel in a rolling window, for every host.

One Redis sorted set per contact and channel holds the sends of the window (member: the lead, score:
when it was claimed); one Lua call checks and reserves a whole batch atomically, so two workers on
two hosts can never both take the last slot. Key names hold a salted hash of the contact, never the
contact itself (leadctl.compliance.pseudonym), under the scope's hash tag (one slot on a cluster).

A reservation is made when the send is claimed and is not given back if the send then fails: a cap
errs towards fewer messages, never more. The cap itself (``compliance.caps``: ``3/week``) is parsed
with the configuration (leadctl.config.parse_cap).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from leadctl.config import Cap
from leadctl.queue import keys

_RESERVE = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
    local member = ARGV[3 + i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    if redis.call('ZSCORE', key, member) then
        out[i] = 0
    elseif redis.call('ZCARD', key) < limit then
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, window)
        out[i] = 0
    else
        out[i] = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) + window
    end
end
return out
"""


class CapCounter:
    """Reserves cap slots for one channel's sends in one scope."""

    def __init__(self, client: aioredis.Redis, scope: str, channel: str, cap: Cap) -> None:
        self.cap = cap
        self.channel = channel
        self.scope = scope
        self._script = client.register_script(_RESERVE)

    def key(self, digest: str) -> str:
        return keys.cap(self.scope, self.channel, digest)

    async def reserve(self, items: Sequence[tuple[str, str]], now: float) -> list[float | None]:
        """For each (contact digest, member): None when a slot was reserved (or already was), else
        the epoch second a slot frees up."""
        if not items:
            return []
        window_ms = self.cap.window_s * 1000
        reply = await self._script(
            keys=[self.key(digest) for digest, _ in items],
            args=[int(now * 1000), window_ms, self.cap.limit, *(member for _, member in items)],
        )
        return [None if int(frees) == 0 else int(frees) / 1000 for frees in reply]
