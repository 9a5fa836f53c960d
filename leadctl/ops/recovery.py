"""What an operator does with the leads the worker set aside, and with a queue Redis lost.

- Dead letters (``{ns:channel}:dead``: entries with ``entry``, ``lead`` and ``reason``): list them
  with their lead from PostgreSQL, replay them (the lead goes back to ``queued`` and to its stream)
  or purge them (the lead stays ``dead`` in PostgreSQL).
- Leads ``in_doubt`` (the request may have reached the provider): list them, resend them (the
  operator accepts a possible duplicate) or resolve them as ``sent`` or ``failed``.
- Requeue: append every ``queued`` lead missing from its stream (Redis lost its data, or a crash
  between PostgreSQL's commit and the XADD), so the queue can always be rebuilt from PostgreSQL.

Every change commits in PostgreSQL before the stream is touched, as ingest does: a crash in
between leaves a ``queued`` lead without an entry, which ``requeue`` (or replaying again) repairs;
a duplicate entry is harmless, since the send claim makes it a no-op. Replaying keeps the
``attempts`` column counting (it is the lead's lifetime count of provider requests); the worker
gives each replayed lead a fresh ``channels.<ch>.max_attempts``, as it gives every claim.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
import redis

from leadctl.config import Settings
from leadctl.connections import Endpoints, RedisClient, open_postgres, open_redis
from leadctl.masking import mask_contact
from leadctl.queue import keys, streams
from leadctl.store.recovery import (
    DoubtfulLead,
    doubtful_leads,
    due_queued,
    lead_states,
    requeue_doubtful,
    resolve_doubtful,
    revive_dead,
)

PAGE = 1000
"""Dead letters read, and handled, per round trip."""

STREAM_PAGE = 10_000
"""Stream entries read per XRANGE when requeue looks for the leads already queued."""

Verdict = Literal["sent", "failed"]


def _entries(
    client: redis.Redis, key: str, limit: int | None, page: int
) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
    """A stream's entries, oldest first, in pages of ``page`` (XRANGE with an exclusive start)."""
    start, left = "-", limit
    while left is None or left > 0:
        count = page if left is None else min(page, left)
        batch = client.xrange(key, min=start, count=count)
        if not batch:
            return
        yield batch
        if left is not None:
            left -= len(batch)
        if len(batch) < count:
            return
        start = "(" + batch[-1][0].decode()


def _lead_of(fields: dict[bytes, bytes], name: bytes) -> int | None:
    raw = fields.get(name, b"")
    return int(raw) if raw.isdigit() else None


def _entry_time(entry_id: bytes) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split(b"-", 1)[0]) / 1000, UTC)


# -- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter entry and, when its lead is known, what PostgreSQL holds about it."""

    channel: str
    entry_id: str
    lead_id: int | None
    reason: str
    dead_at: datetime
    contact: str | None = None
    status: str | None = None
    attempts: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "id": self.entry_id,
            "lead_id": self.lead_id,
            "contact": mask_contact(self.contact) if self.contact else None,
            "reason": self.reason,
            "attempts": self.attempts,
            "status": self.status,
            "dead_at": self.dead_at.isoformat(),
        }


@dataclass(slots=True)
class ReplayResult:
    """One channel's replay: leads queued again, entries of leads already finished otherwise (removed,
    nothing sent), and entries kept because they name no known lead (undecodable or unknown: purge them)."""

    replayed: int = 0
    skipped: int = 0
    kept: int = 0


def dead_letters(
    client: redis.Redis, conn: psycopg.Connection, namespace: str, channel: str, limit: int | None
) -> tuple[int, list[DeadLetter]]:
    """How many dead letters the channel holds, and the oldest ``limit`` of them with their leads."""
    key = keys.dead_letters(namespace, channel)
    found: list[DeadLetter] = []
    for page in _entries(client, key, limit, PAGE):
        leads = [_lead_of(fields, b"lead") for _, fields in page]
        known = lead_states(conn, namespace, channel, [lead_id for lead_id in leads if lead_id is not None])
        found += [
            DeadLetter(
                channel,
                entry_id.decode(),
                lead_id,
                fields.get(b"reason", b"").decode("utf-8", "replace"),
                _entry_time(entry_id),
                *known.get(lead_id, (None, None, None)),
            )
            for (entry_id, fields), lead_id in zip(page, leads, strict=True)
        ]
    return int(client.xlen(key)), found


def replay_dead_letters(
    client: redis.Redis,
    conn: psycopg.Connection,
    namespace: str,
    channel: str,
    limit: int | None = None,
    partitions: int = 1,
) -> ReplayResult:
    """Queue the leads of the oldest ``limit`` dead letters again and remove their entries.

    A lead found ``dead`` goes back to ``queued`` (attempts kept) and to the stream; one already
    ``queued`` (an earlier replay stopped before its XADD) goes to the stream again; one finished
    otherwise (sent, failed, in doubt...) is left alone. Running it twice queues nothing twice.
    """
    dead_key = keys.dead_letters(namespace, channel)
    streams.ensure_group(client, namespace, channel, partitions)
    result = ReplayResult()
    for page in _entries(client, dead_key, limit, PAGE):
        by_lead: dict[int, list[bytes]] = defaultdict(list)
        for entry_id, fields in page:
            lead_id = _lead_of(fields, b"lead")
            if lead_id is not None:
                by_lead[lead_id].append(entry_id)
        rows = revive_dead(conn, namespace, channel, list(by_lead))
        requeue = [lead_id for lead_id, queued in rows if queued]
        pipe = client.pipeline(transaction=False)
        for lead_id in requeue:
            pipe.xadd(
                keys.stream(namespace, channel, keys.partition_of(lead_id, partitions)),
                {streams.LEAD_FIELD: lead_id},
            )
        done = [entry_id for lead_id, _ in rows for entry_id in by_lead[lead_id]]
        if done:
            pipe.xdel(dead_key, *done)
        pipe.execute()
        result.replayed += len(requeue)
        result.skipped += len(rows) - len(requeue)
        result.kept += len(page) - len(done)
    return result


def purge_dead_letters(client: redis.Redis, namespace: str, channel: str, limit: int | None = None) -> int:
    """Remove the oldest ``limit`` dead letters (all when None); their leads stay ``dead``."""
    key = keys.dead_letters(namespace, channel)
    removed = 0
    for page in _entries(client, key, limit, PAGE):
        removed += int(client.xdel(key, *(entry_id for entry_id, _ in page)))
    return removed


# -- in doubt ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Changed:
    """Leads a resend or resolve changed, per channel, and the requested ones it left alone (not in doubt)."""

    lead_ids: dict[str, list[int]]
    skipped: list[int]

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.lead_ids.values())


def in_doubt(
    conn: psycopg.Connection,
    namespace: str,
    channels: Sequence[str],
    lead_ids: Sequence[int] | None = None,
    limit: int | None = None,
) -> tuple[int, list[DoubtfulLead]]:
    """How many leads are in doubt, and the oldest ``limit`` of them."""
    return doubtful_leads(conn, namespace, channels, lead_ids, limit)


def _changed(rows: list[tuple[int, str]], lead_ids: Sequence[int] | None) -> Changed:
    by_channel: dict[str, list[int]] = defaultdict(list)
    for lead_id, channel in sorted(rows):
        by_channel[channel].append(lead_id)
    done = {lead_id for lead_id, _ in rows}
    skipped = sorted(set(lead_ids) - done) if lead_ids is not None else []
    return Changed(dict(by_channel), skipped)


def resend_in_doubt(
    client: redis.Redis,
    conn: psycopg.Connection,
    namespace: str,
    channels: Sequence[str],
    lead_ids: Sequence[int] | None,
    partitions: int = 1,
) -> Changed:
    """Queue in-doubt leads again (all of ``channels`` when ``lead_ids`` is None): they will be sent,
    perhaps a second time. Leads not in doubt (any more) are left alone."""
    changed = _changed(requeue_doubtful(conn, namespace, channels, lead_ids), lead_ids)
    for channel, ids in changed.lead_ids.items():
        streams.ensure_group(client, namespace, channel, partitions)
        streams.enqueue(client, namespace, ((channel, lead_id) for lead_id in ids), partitions)
    return changed


def resolve_in_doubt(
    conn: psycopg.Connection,
    namespace: str,
    channels: Sequence[str],
    lead_ids: Sequence[int] | None,
    verdict: Verdict,
    note: str = "",
) -> Changed:
    """Record the operator's verdict on in-doubt leads: ``sent`` or ``failed``, nothing is sent.

    ``error_code`` becomes ``operator`` and ``error_message`` says the verdict, the note and why the
    lead was in doubt.
    """
    return _changed(resolve_doubtful(conn, namespace, channels, lead_ids, verdict, note), lead_ids)


# -- requeue -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequeueResult:
    """One channel: leads ``queued`` in PostgreSQL, how many of them had an entry, how many were appended."""

    queued: int
    in_stream: int
    appended: int


def requeue(
    client: redis.Redis, conn: psycopg.Connection, namespace: str, channel: str, partitions: int = 1
) -> RequeueResult:
    """Append to the channel's stream every ``queued`` lead that has no entry in it.

    The stream is read first, so a lead queued meanwhile may get a second entry (harmless: the claim
    makes it a no-op), never none. A lead deferred to a later time (quiet hours, a frequency cap)
    waits in the delayed set, not the stream: it is not missing until that time has passed.
    """
    streams.ensure_group(client, namespace, channel, partitions)
    in_stream: set[int] = set()
    for key in keys.streams(namespace, channel, partitions):
        for page in _entries(client, key, None, STREAM_PAGE):
            in_stream.update(
                lead_id for _, fields in page if (lead_id := _lead_of(fields, streams.LEAD_FIELD))
            )
    queued = due_queued(conn, namespace, channel)
    missing = [lead_id for lead_id in queued if lead_id not in in_stream]
    for start in range(0, len(missing), STREAM_PAGE):
        streams.enqueue(
            client,
            namespace,
            ((channel, lead_id) for lead_id in missing[start : start + STREAM_PAGE]),
            partitions,
        )
    return RequeueResult(len(queued), len(queued) - len(missing), len(missing))


# -- the operator's commands -------------------------------------------------------------------


@dataclass(slots=True)
class DeadLetters:
    """How many dead letters each channel holds, and the oldest of them."""

    totals: dict[str, int] = field(default_factory=dict)
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "channels": self.totals,
            "dead_letters": [d.as_json() for d in self.letters],
        }


class Recovery:
    """`leadctl dlq`, `doubt` and `requeue` on one namespace, each action over several channels.

    Redis and PostgreSQL are connected on first use (Redis first) and closed by ``close``; use it
    as a context manager.
    """

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.namespace = settings.namespace
        self.partitions = settings.redis.partitions
        self._redis: RedisClient | None = None
        self._conn: psycopg.Connection | None = None

    @property
    def redis(self) -> RedisClient:
        if self._redis is None:
            self._redis = open_redis(self.endpoints.redis_url, self.settings)
        return self._redis

    @property
    def postgres(self) -> psycopg.Connection:
        if self._conn is None:
            self._conn = open_postgres(self.endpoints.database_url, self.settings)
        return self._conn

    def __enter__(self) -> Recovery:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._conn is not None:
            self._conn.close()
        self._redis = self._conn = None

    def dead_letters(self, channels: Sequence[str], limit: int | None) -> DeadLetters:
        """Each channel's dead letters: their count, and the oldest ``limit`` with their leads."""
        client, conn = self.redis, self.postgres
        found = DeadLetters()
        for channel in channels:
            found.totals[channel], letters = dead_letters(client, conn, self.namespace, channel, limit)
            found.letters += letters
        return found

    def replay(self, channels: Sequence[str], limit: int | None) -> dict[str, ReplayResult]:
        """Queue each channel's oldest ``limit`` dead letters again (see replay_dead_letters)."""
        client, conn = self.redis, self.postgres
        return {
            channel: replay_dead_letters(client, conn, self.namespace, channel, limit, self.partitions)
            for channel in channels
        }

    def purge(self, channels: Sequence[str], limit: int | None) -> dict[str, int]:
        """Remove each channel's oldest ``limit`` dead letters for good; how many went, per channel."""
        return {
            channel: purge_dead_letters(self.redis, self.namespace, channel, limit) for channel in channels
        }

    def in_doubt(
        self, channels: Sequence[str], lead_ids: Sequence[int] | None = None, limit: int | None = None
    ) -> tuple[int, list[DoubtfulLead]]:
        """How many leads of ``channels`` (or of ``lead_ids``) are in doubt, and the oldest ``limit``."""
        return in_doubt(self.postgres, self.namespace, channels, lead_ids, limit)

    def resend(self, channels: Sequence[str], lead_ids: Sequence[int] | None) -> Changed:
        """Queue in-doubt leads again (all of ``channels`` when ``lead_ids`` is None)."""
        client, conn = self.redis, self.postgres
        return resend_in_doubt(client, conn, self.namespace, channels, lead_ids, self.partitions)

    def resolve(
        self, channels: Sequence[str], lead_ids: Sequence[int] | None, verdict: Verdict, note: str = ""
    ) -> Changed:
        """Record the operator's verdict on in-doubt leads; nothing is sent."""
        return resolve_in_doubt(self.postgres, self.namespace, channels, lead_ids, verdict, note)

    def requeue(self, channels: Sequence[str]) -> dict[str, RequeueResult]:
        """Append every ``queued`` lead missing from its channel's stream (see requeue)."""
        client, conn = self.redis, self.postgres
        return {
            channel: requeue(client, conn, self.namespace, channel, self.partitions) for channel in channels
        }
