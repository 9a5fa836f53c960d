"""Sending only some campaigns (`leadctl batch --campaign`, `leadctl work --burst --campaign`).

A channel's stream holds the leads of every campaign, in arrival order, and cannot be read by
campaign. A filtered worker reads it as any worker does; before the send claim it looks up the
campaigns of what it read (one SELECT) and *passes over* the entries of other campaigns: each is
moved to the tail of its partition's stream, unread, atomically (StreamConsumer.pass_over), so it
is never claimed, lost or doubled and its lead stays ``queued``.

So that the run ends, the run notes each partition's last entry id when it starts (its
*horizon*). An entry of another campaign beyond the horizon can only be one passed over (or queued)
during the run: the worker has seen that partition whole, and reads it no more. Entries of the
selected campaigns beyond the horizon (queued during the run, deferred leads now due) are sent,
as an unfiltered run sends them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from leadctl.connections import RedisClient
from leadctl.queue import streams
from leadctl.queue.streams import Entry, StreamConsumer, StreamId
from leadctl.store.campaigns import leads_outside


@dataclass(frozen=True, slots=True)
class CampaignFilter:
    """Send only the leads of ``campaigns``; ``horizon``: each partition's last entry id when the
    run began (the same for every worker of the run, restarted ones too)."""

    campaigns: frozenset[str]
    horizon: tuple[StreamId, ...]


def campaign_filter(
    client: RedisClient, namespace: str, channel: str, partitions: int, campaigns: Collection[str]
) -> CampaignFilter:
    """A filter for one channel's run, its horizon noted now."""
    return CampaignFilter(frozenset(campaigns), streams.last_ids(client, namespace, channel, partitions))


class CampaignSifter:
    """One filtered worker's pass over what it reads: keeps the selected campaigns' entries."""

    def __init__(
        self, stream: StreamConsumer, pool: AsyncConnectionPool, namespace: str, only: CampaignFilter
    ) -> None:
        self.stream = stream
        self.pool = pool
        self.namespace = namespace
        self.only = only

    async def sift(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries to claim; those of other campaigns are passed over, and a partition where one
        lies beyond the horizon is closed to reading. Undecodable entries and unknown leads are
        kept: the claim sends them to the dead letters, as always."""
        others = await self._other_campaigns([e.lead_id for e in entries if e.lead_id is not None])
        if not others:
            return list(entries)
        passed = [e for e in entries if e.lead_id in others]
        for entry in passed:
            partition, entry_id = streams.position(entry.entry_id)
            if entry_id > self.only.horizon[partition]:
                self.stream.closed.add(partition)
        await self.stream.pass_over(passed)
        return [e for e in entries if e.lead_id not in others]

    async def _other_campaigns(self, lead_ids: list[int]) -> set[int]:
        if not lead_ids:
            return set()
        async with self.pool.connection() as conn:
            return await leads_outside(conn, self.namespace, lead_ids, self.only.campaigns)
