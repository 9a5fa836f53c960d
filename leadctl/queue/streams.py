"""Redis Streams transport: one stream per channel, one consumer group, at-least-once delivery.

An entry carries only the lead's id (``l``); the lead itself, with its personal data, stays in
PostgreSQL. Acknowledged entries are deleted (XACK + XDEL), so a stream's length is always
``queued + pending`` and its memory stays bounded.

With ``redis.partitions`` P > 1 a channel is P streams, each in its own cluster slot (leadctl.queue.keys):
a lead is queued in partition ``id % P`` and every worker reads every partition in turn, so any
worker drains any partition and no partition waits for a worker of its own. Every command names
one key (or keys of one slot); what spans partitions is a loop or a non-transactional pipeline.

P is recorded in Redis (``keys.partition_count``, in partition 0's slot) the first time a channel's
streams are ensured, and every later ensure checks it: a process configured with another P would
queue into, or read, other streams than its peers, so it stops with a config error instead.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from leadctl.connections import AsyncRedisClient, RedisClient
from leadctl.errors import ConfigError
from leadctl.queue import keys

LEAD_FIELD = b"l"


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry; ``lead_id`` is None when the entry could not be decoded (poison).

    ``entry_id`` is what the consumer acknowledges it by: the stream id, prefixed with
    ``<partition>/`` on a partitioned channel (stream ids are unique only within one stream).
    """

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


_RECORD_PARTITIONS = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
"""Record a channel's partition count unless one is recorded; return the recorded one."""


def _check_partitions(channel: str, recorded: bytes | str, partitions: int) -> None:
    """Raise ConfigError unless the channel's recorded partition count is ``partitions``."""
    count = int(recorded)
    if count != partitions:
        raise ConfigError(
            f"redis.partitions is {partitions} here, but the {channel} queue in Redis has {count} "
            f"partition{'' if count == 1 else 's'}: set redis.partitions: {count} on every host "
            "(to change it, see README, Deployment, Partitions)"
        )


def check_partitions(client: RedisClient, namespace: str, channels: Sequence[str], partitions: int) -> None:
    """Raise ConfigError when a channel's recorded partition count is not ``partitions``, recording
    nothing: for commands to check before they write (a channel never queued passes)."""
    pipe = client.pipeline(transaction=False)
    for channel in channels:
        pipe.get(keys.partition_count(namespace, channel))
    for channel, recorded in zip(channels, pipe.execute(), strict=True):
        if recorded is not None:
            _check_partitions(channel, recorded, partitions)


def ensure_group(client: RedisClient, namespace: str, channel: str, partitions: int = 1) -> None:
    """Record (or check) the channel's partition count, then create its streams and their consumer
    group if they do not exist."""
    recorded = client.eval(_RECORD_PARTITIONS, 1, keys.partition_count(namespace, channel), partitions)
    _check_partitions(channel, recorded, partitions)
    for key in keys.streams(namespace, channel, partitions):
        try:
            client.xgroup_create(key, keys.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not _is_busygroup(exc):
                raise


def enqueue(
    client: RedisClient, namespace: str, items: Iterable[tuple[str, int]], partitions: int = 1
) -> int:
    """Append (channel, lead_id) pairs to their streams in one pipeline; return how many."""
    pipe = client.pipeline(transaction=False)
    count = 0
    for channel, lead_id in items:
        key = keys.stream(namespace, channel, keys.partition_of(lead_id, partitions))
        pipe.xadd(key, {LEAD_FIELD: lead_id})
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


def _by_partition(lead_ids: str, partitions: int) -> dict[int, str]:
    """Comma-separated ids split per partition, each part in the order given."""
    if partitions == 1:
        return {0: lead_ids}
    parts: defaultdict[int, list[str]] = defaultdict(list)
    for lead_id in lead_ids.split(","):
        parts[keys.partition_of(int(lead_id), partitions)].append(lead_id)
    return {partition: ",".join(ids) for partition, ids in parts.items()}


def enqueue_ids(client: RedisClient, namespace: str, channel: str, lead_ids: str, partitions: int = 1) -> int:
    """Append comma-separated lead ids to one channel's streams, in order, in one round trip per
    partition (a Lua script, so there is no Python work per id on an unpartitioned channel);
    return how many."""
    if not lead_ids:
        return 0
    script = client.register_script(_XADD_EACH)
    return sum(
        int(script(keys=[keys.stream(namespace, channel, partition)], args=[ids, LEAD_FIELD]))
        for partition, ids in _by_partition(lead_ids, partitions).items()
    )


def depth(client: RedisClient, namespace: str, channel: str, partitions: int = 1) -> Depth:
    """Queued and pending counts of one channel over its partitions (a stream never used counts 0)."""
    pipe = client.pipeline(transaction=False)
    for key in keys.streams(namespace, channel, partitions):
        pipe.xlen(key)
        pipe.xpending(key, keys.GROUP)
    replies = pipe.execute(raise_on_error=False)
    queued = pending = 0
    for length, summary in zip(replies[::2], replies[1::2], strict=True):
        for reply in (length, summary):
            if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                raise reply
        if isinstance(summary, redis.ResponseError):  # NOGROUP: nothing was ever queued here
            continue
        count = int(summary["pending"]) if summary else 0
        queued += max(0, int(length) - count)
        pending += count
    return Depth(queued, pending)


StreamId = tuple[int, int]
"""A stream entry id as comparable numbers: ``b"1700000000000-3"`` -> ``(1700000000000, 3)``."""


def stream_id(raw: bytes | str) -> StreamId:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


def last_ids(client: RedisClient, namespace: str, channel: str, partitions: int = 1) -> tuple[StreamId, ...]:
    """Each partition's last generated entry id (XINFO STREAM); (0, 0) for a stream never used."""
    pipe = client.pipeline(transaction=False)
    for key in keys.streams(namespace, channel, partitions):
        pipe.xinfo_stream(key)
    ids = []
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
            raise reply
        ids.append((0, 0) if isinstance(reply, Exception) else stream_id(reply["last-generated-id"]))
    return tuple(ids)


_PASS_OVER = """
local moved = 0
for i = 3, #ARGV, 2 do
    if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
        redis.call('XDEL', KEYS[1], ARGV[i])
        redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i + 1])
        moved = moved + 1
    end
end
return moved
"""
"""Move entries (id, lead id pairs) to the tail of their stream, unread, atomically. An entry is
re-added only if this acknowledgement took it off the pending list: when another consumer settled
it first, it is left alone, so an entry is never lost and never doubled."""


def _ref(partition: int, entry_id: bytes, partitions: int) -> bytes:
    return entry_id if partitions == 1 else b"%d/%s" % (partition, entry_id)


def _unref(ref: bytes) -> tuple[int, bytes]:
    partition, slash, entry_id = ref.partition(b"/")
    return (int(partition), entry_id) if slash else (0, ref)


def position(ref: bytes) -> tuple[int, StreamId]:
    """Where an entry is: its partition and its id in that partition's stream."""
    partition, entry_id = _unref(ref)
    return partition, stream_id(entry_id)


class StreamConsumer:
    """One worker's view of a channel's streams (every partition) in the consumer group.

    A read goes round the partitions: it starts after the partition the last read took from, asks
    each in turn without blocking and blocks (``block_ms``) only on the last of the round, so an
    idle worker makes one blocking call and P-1 quick ones per ``block_ms``. With one partition it
    is the single blocking XREADGROUP it always was.
    """

    def __init__(
        self, client: AsyncRedisClient, namespace: str, channel: str, consumer: str, partitions: int = 1
    ) -> None:
        self.client = client
        self.channel = channel
        self.keys = keys.streams(namespace, channel, partitions)
        self.count_key = keys.partition_count(namespace, channel)
        self.dead_key = keys.dead_letters(namespace, channel)
        self.consumer = consumer
        self._next = 0  # the partition the next read starts at
        self.closed: set[int] = set()
        """Partitions ``read`` no longer visits (a campaign-filtered run past its horizon there)."""

    async def ensure_group(self) -> None:
        """Record (or check) the channel's partition count, then create the streams and the group."""
        partitions = len(self.keys)
        recorded = await self.client.eval(_RECORD_PARTITIONS, 1, self.count_key, partitions)
        _check_partitions(self.channel, recorded, partitions)
        for key in self.keys:
            try:
                await self.client.xgroup_create(key, keys.GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if not _is_busygroup(exc):
                    raise

    def _round(self) -> list[int]:
        """The partitions in the order this read visits them."""
        count = len(self.keys)
        return [(self._next + step) % count for step in range(count)]

    def _entries(
        self, partition: int, replies: Iterable[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> list[Entry]:
        return [_decode(_ref(partition, entry_id, len(self.keys)), fields) for entry_id, fields in replies]

    def _split(self, refs: Iterable[bytes]) -> dict[int, list[bytes]]:
        """Entry ids per partition."""
        parts: defaultdict[int, list[bytes]] = defaultdict(list)
        for ref in refs:
            partition, entry_id = _unref(ref)
            parts[partition].append(entry_id)
        return parts

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer (XREADGROUP ... COUNT) from the next partition that has
        any, waiting up to ``block_ms`` on the last partition of the round."""
        order = self._round()
        if self.closed:
            order = [partition for partition in order if partition not in self.closed]
            if not order:  # nothing left to visit: wait as an empty read would
                await asyncio.sleep((block_ms or 0) / 1000)
                return []
        for partition in order:
            reply = await self.client.xreadgroup(
                keys.GROUP,
                self.consumer,
                {self.keys[partition]: ">"},
                count=count,
                block=block_ms if partition == order[-1] else None,
            )
            if reply:
                self._next = (partition + 1) % len(self.keys)
                return self._entries(partition, reply[0][1])
        return []

    async def reclaim(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries other consumers left pending longer than ``min_idle_ms`` (crashed
        workers), up to ``count``, from every partition."""
        entries: list[Entry] = []
        for partition in self._round():
            if len(entries) >= count:
                break
            reply = await self.client.xautoclaim(
                self.keys[partition],
                keys.GROUP,
                self.consumer,
                min_idle_time=min_idle_ms,
                start_id="0-0",
                count=count - len(entries),
            )
            claimed = reply[1]
            entries += self._entries(partition, [(i, fields) for i, fields in claimed if fields is not None])
            deleted = [i for i, fields in claimed if fields is None]
            if len(reply) > 2:
                deleted.extend(reply[2])
            if deleted:  # trimmed away under us: nothing to send, just clear them from the pending list
                await self.settle([_ref(partition, i, len(self.keys)) for i in deleted])
        return entries

    async def renew(self, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries still being worked on, so no other worker reclaims them."""
        if not entry_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for partition, ids in self._split(entry_ids).items():
            pipe.xclaim(
                self.keys[partition], keys.GROUP, self.consumer, min_idle_time=0, message_ids=ids, justid=True
            )
        await pipe.execute()

    async def settle(self, acked: Sequence[bytes], dead: Sequence[tuple[Entry, str]] = ()) -> None:
        """In one round trip: acknowledge and delete ``acked``; move ``dead`` to the dead-letter stream."""
        if not acked and not dead:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry, reason in dead:
            lead = str(entry.lead_id) if entry.lead_id is not None else ""
            pipe.xadd(self.dead_key, {"entry": entry.entry_id, "lead": lead, "reason": reason})
        done = [*acked, *(entry.entry_id for entry, _ in dead)]
        for partition, ids in self._split(done).items():
            pipe.xack(self.keys[partition], keys.GROUP, *ids)
            pipe.xdel(self.keys[partition], *ids)
        await pipe.execute()

    async def pass_over(self, entries: Sequence[Entry]) -> int:
        """Move decoded ``entries`` to the tail of their partition's stream, unread (_PASS_OVER): one
        atomic script per partition, naming that partition's key alone (legal on Redis Cluster).
        Returns how many were moved (the others were settled by another consumer meanwhile)."""
        script = self.client.register_script(_PASS_OVER)
        args: defaultdict[int, list[bytes | int | None]] = defaultdict(list)
        for entry in entries:
            partition, entry_id = _unref(entry.entry_id)
            args[partition] += (entry_id, entry.lead_id)
        moved = 0
        for partition, pairs in args.items():
            moved += int(await script(keys=[self.keys[partition]], args=[keys.GROUP, LEAD_FIELD, *pairs]))
        return moved

    async def pending_total(self) -> int:
        """Entries of the whole group read but not yet acknowledged, over every partition."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xpending(key, keys.GROUP)
        return sum(int(summary["pending"]) if summary else 0 for summary in await pipe.execute())

    async def length(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xlen(key)
        return sum(int(length) for length in await pipe.execute())
