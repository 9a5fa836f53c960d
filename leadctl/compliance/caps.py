"""Frequency caps: at most N messages per contact per channel in a rolling window, for every host.

One Redis sorted set per contact and channel holds the sends of the window (member: the lead, score:
when it was claimed); one Lua call checks and reserves a whole batch atomically, so two workers on
two hosts can never both take the last slot. Key names hold a salted hash of the contact, never the
contact itself (leadctl.compliance.pseudonym), under the scope's hash tag (one slot on a cluster).

A reservation is made when the send is claimed and is not given back if the send then fails: a cap
errs towards fewer messages, never more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from leadctl.queue import keys

_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
}
_CAP = re.compile(r"^(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day|week|month|s|m|h|d|w)s?$")

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


@dataclass(frozen=True, slots=True)
class Cap:
    """``limit`` messages per ``window_s`` seconds."""

    limit: int
    window_s: int


def parse_cap(text: str) -> Cap:
    """'3/week', '2/day', '10/30d', '5/12h' -> Cap; ValueError otherwise (a month is 30 days)."""
    found = _CAP.match(text.strip().lower())
    if found and int(found.group(1)) >= 1 and int(found.group(2) or 1) >= 1:
        return Cap(int(found.group(1)), int(found.group(2) or 1) * _SECONDS[found.group(3)])
    raise ValueError(f"cap must look like 3/week, 2/day or 10/30d, not {text!r}")


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
