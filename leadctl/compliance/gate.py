"""The send gate: which claimed leads may go now, which wait, which a frequency cap skips.

A worker passes each claimed batch through it before sending. A lead outside its send window
(leadctl.compliance.windows) waits for the window to open; a lead whose contact reached the
channel's cap (leadctl.compliance.caps) waits for a slot, or is skipped (``compliance.cap_action``).
Waiting leads go back to ``queued`` with their ``not_before`` in the claim's own transaction, and
to the delayed set (leadctl.queue.deferred), never failed and never sent early. A channel with
no window and no cap has an inactive gate: no statement, no round trip, no transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from leadctl.compliance.caps import CapCounter
from leadctl.compliance.pseudonym import caps_salt, contact_digest
from leadctl.compliance.windows import Window, next_allowed, zones_for
from leadctl.config import Settings, parse_cap, zone
from leadctl.connections import AsyncRedisClient
from leadctl.queue.deferred import DelayedLeads
from leadctl.store.deferrals import Deferrals, Held
from leadctl.store.deliveries import ClaimedLead

QUIET_HOURS = "quiet_hours"
FREQUENCY_CAP = "frequency_cap"


@dataclass(slots=True)
class Verdict:
    """Leads to send now, leads deferred (with when), leads skipped for good."""

    send: list[ClaimedLead]
    deferred: list[Held] = field(default_factory=list)
    skipped: list[Held] = field(default_factory=list)


class SendGate:
    """Quiet hours and frequency caps for one channel; ``clock`` gives epoch seconds (tests move it)."""

    def __init__(
        self, settings: Settings, channel: str, client: AsyncRedisClient, clock: Callable[[], float]
    ) -> None:
        compliance = settings.compliance
        self.channel = channel
        self.clock = clock
        self._compliance = compliance
        self._namespace = settings.namespace
        self._default_zone = zone(compliance.default_timezone)
        self._windows: dict[str, Window | None] = {}
        self._client = client
        cap = compliance.caps.get(channel)
        self._scope = compliance.caps_scope or settings.namespace
        self._caps = CapCounter(client, self._scope, channel, parse_cap(cap)) if cap else None
        self._salt: bytes | None = None
        self._deferrals = Deferrals(settings.namespace)
        self.delayed = DelayedLeads(
            client, settings.namespace, channel, settings.redis.partitions, settings.worker.batch_size * 10
        )
        self.active = (
            self._caps is not None
            or channel in compliance.quiet_hours
            or any(channel in c.quiet_hours for c in compliance.campaigns.values())
        )

    def atomic(self, conn: psycopg.AsyncConnection) -> contextlib.AbstractAsyncContextManager[object]:
        """One transaction around the claim and its verdict when the gate is active (else nothing)."""
        return conn.transaction() if self.active else contextlib.nullcontext()

    def _window(self, campaign: str) -> Window | None:
        if campaign not in self._windows:
            hours = self._compliance.window_for(self.channel, campaign)
            self._windows[campaign] = Window.parse(hours.allow, hours.days) if hours else None
        return self._windows[campaign]

    async def apply(
        self, conn: psycopg.AsyncConnection, leads: Sequence[ClaimedLead], worker: str
    ) -> Verdict:
        """Judge a claimed batch and hand the leads that may not go now back, in ``conn``'s transaction."""
        if not self.active or not leads:
            return Verdict(list(leads))
        now = self.clock()
        verdict = self._windows_verdict(leads, now)
        if self._caps is not None and verdict.send:
            await self._cap(verdict, now)
        await self._deferrals.release(conn, verdict.deferred + verdict.skipped, worker)
        return verdict

    def _windows_verdict(self, leads: Sequence[ClaimedLead], now: float) -> Verdict:
        moment = datetime.fromtimestamp(now, UTC)
        assert self._default_zone is not None  # validated with the config
        verdict = Verdict([])
        field_name = self._compliance.timezone_field
        for lead in leads:
            window = self._window(lead.campaign)
            opens = None
            if window is not None:
                zones = zones_for(lead.contact, lead.fields, field_name, self._default_zone)
                opens = next_allowed(moment, window, zones, self._default_zone)
            if opens is None:
                verdict.send.append(lead)
            else:
                message = f"outside its send window; may go at {opens.isoformat(timespec='minutes')}"
                verdict.deferred.append(Held(lead.lead_id, opens.timestamp(), QUIET_HOURS, message))
        return verdict

    async def _cap(self, verdict: Verdict, now: float) -> None:
        assert self._caps is not None
        if self._salt is None:
            self._salt = await caps_salt(self._client, self._scope)
        items = [
            (contact_digest(self._salt, lead.contact), f"{self._namespace}:{lead.lead_id}")
            for lead in verdict.send
        ]
        frees = await self._caps.reserve(items, now)
        cap = self._caps.cap
        allowed: list[ClaimedLead] = []
        for lead, free_at in zip(verdict.send, frees, strict=True):
            if free_at is None:
                allowed.append(lead)
                continue
            limit = f"{cap.limit} per {cap.window_s}s on {self.channel}"
            if self._compliance.cap_action == "skip":
                verdict.skipped.append(Held(lead.lead_id, None, FREQUENCY_CAP, f"frequency cap ({limit})"))
            else:
                when = datetime.fromtimestamp(free_at, UTC).isoformat(timespec="minutes")
                message = f"frequency cap ({limit}); may go at {when}"
                verdict.deferred.append(Held(lead.lead_id, max(free_at, now), FREQUENCY_CAP, message))
        verdict.send = allowed

    async def delay(self, held: Sequence[Held]) -> None:
        """Keep deferred leads in the delayed set (call before acknowledging their entries)."""
        await self.delayed.add([(h.lead_id, h.not_before) for h in held if h.not_before is not None])

    async def promote(self) -> int:
        """Put due deferred leads back in the stream (throttled; cheap to call on every read)."""
        return await self.delayed.promote(self.clock())
