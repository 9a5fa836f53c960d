"""Redis Streams transport: one stream per channel, one consumer group, at-least-once delivery.

An entry carries only the lead's id (``l``); the lead itself, with its personal data, stays in
PostgreSQL. Acknowledged entries are deleted (XACK + XDEL), so a stream's length is always
``queued + pending`` and its memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from leadctl import keys

LEAD_FIELD = b"l"


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry; ``lead_id`` is None when the entry could not be decoded (poison)."""

    entry_id: bytes
    lead_id: int | None


@dataclass(frozen=True, slots=True)
class Depth:
    """How many of a channel's entries wait to be read (queued) or are read but unacknowledged (pending)."""

    queued: int
    pending: int


def _decode(entry_id: bytes, fields: dict[bytes, bytes] | None) -> Entry:
    raw = (fields or {}).get(LEAD_FIELD)
    try:
        return Entry(entry_id, int(raw)) if raw is not None else Entry(entry_id, None)
    except ValueError:
        return Entry(entry_id, None)


def _is_busygroup(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("BUSYGROUP")


def ensure_group(client: redis.Redis, namespace: str, channel: str) -> None:
    """Create the channel's stream and consumer group if they do not exist."""
    try:
        client.xgroup_create(keys.stream(namespace, channel), keys.GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not _is_busygroup(exc):
            raise


def enqueue(client: redis.Redis, namespace: str, items: Iterable[tuple[str, int]]) -> int:
    """Append (channel, lead_id) pairs to their streams in one pipeline; return how many."""
    pipe = client.pipeline(transaction=False)
    count = 0
    for channel, lead_id in items:
        pipe.xadd(keys.stream(namespace, channel), {LEAD_FIELD: lead_id})
        count += 1
    if count:
        pipe.execute()
    return count


_XADD_EACH = """
local n = 0
for id in string.gmatch(ARGV[1], '%d+') do
    redis.call('XADD', KEYS[1], '*', ARGV[2], id)
    n = n + 1
end
return n
"""


def enqueue_ids(client: redis.Redis, namespace: str, channel: str, lead_ids: str) -> int:
    """Append comma-separated lead ids to one channel's stream, in order, in one round trip (a Lua
    script, so there is no Python work per id); return how many."""
    if not lead_ids:
        return 0
    script = client.register_script(_XADD_EACH)
    return int(script(keys=[keys.stream(namespace, channel)], args=[lead_ids, LEAD_FIELD]))


def depth(client: redis.Redis, namespace: str, channel: str) -> Depth:
    """Queued and pending counts of one channel (zero when the stream does not exist yet)."""
    key = keys.stream(namespace, channel)
    pipe = client.pipeline(transaction=False)
    pipe.xlen(key)
    pipe.xpending(key, keys.GROUP)
    try:
        length, pending = pipe.execute()
    except redis.ResponseError:  # NOGROUP: nothing was ever queued on this channel
        return Depth(0, 0)
    pending_count = int(pending["pending"]) if pending else 0
    return Depth(max(0, int(length) - pending_count), pending_count)


class StreamConsumer:
    """One worker's view of a channel's stream in the consumer group."""

    def __init__(self, client: aioredis.Redis, namespace: str, channel: str, consumer: str) -> None:
        self.client = client
        self.key = keys.stream(namespace, channel)
        self.dead_key = keys.dead_letters(namespace, channel)
        self.consumer = consumer

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.key, keys.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not _is_busygroup(exc):
                raise

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer (XREADGROUP ... COUNT), waiting up to ``block_ms``."""
        reply = await self.client.xreadgroup(
            keys.GROUP, self.consumer, {self.key: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        return [_decode(entry_id, fields) for entry_id, fields in reply[0][1]]

    async def reclaim(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries other consumers left pending longer than ``min_idle_ms`` (crashed workers)."""
        reply = await self.client.xautoclaim(
            self.key, keys.GROUP, self.consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        claimed = reply[1]
        entries = [_decode(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        deleted = [entry_id for entry_id, fields in claimed if fields is None]
        if len(reply) > 2:
            deleted.extend(reply[2])
        if deleted:  # trimmed away under us: nothing to send, just clear them from the pending list
            await self.settle(deleted)
        return entries

    async def renew(self, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries still being worked on, so no other worker reclaims them."""
        if entry_ids:
            await self.client.xclaim(
                self.key, keys.GROUP, self.consumer, min_idle_time=0, message_ids=list(entry_ids), justid=True
            )

    async def settle(self, acked: Sequence[bytes], dead: Sequence[tuple[Entry, str]] = ()) -> None:
        """In one round trip: acknowledge and delete ``acked``; move ``dead`` to the dead-letter stream."""
        if not acked and not dead:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry, reason in dead:
            lead = str(entry.lead_id) if entry.lead_id is not None else ""
            pipe.xadd(self.dead_key, {"entry": entry.entry_id, "lead": lead, "reason": reason})
        done = [*acked, *(entry.entry_id for entry, _ in dead)]
        pipe.xack(self.key, keys.GROUP, *done)
        pipe.xdel(self.key, *done)
        await pipe.execute()

    async def pending_total(self) -> int:
        """Entries of the whole group read but not yet acknowledged."""
        summary = await self.client.xpending(self.key, keys.GROUP)
        return int(summary["pending"]) if summary else 0

    async def length(self) -> int:
        return int(await self.client.xlen(self.key))
