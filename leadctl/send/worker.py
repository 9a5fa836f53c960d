"""The asyncio send loop of one worker process.

Three coroutines share one provider session:

- the reader takes entries from the channel's stream (XREADGROUP with COUNT, and XAUTOCLAIM for
  entries of crashed workers), claims their sends in PostgreSQL in one statement, and starts a
  send task per claimed lead, keeping at most ``concurrency`` requests in flight;
- each send task renders the template and sends it through the channel's providers (shared rate
  limits, circuit breakers, failover: leadctl.providers.chain), retrying transient errors by the
  channel's retry policy (leadctl.retry);
- the flusher records finished outcomes in PostgreSQL in one statement, then acknowledges their
  entries in one Redis round trip. Nothing is acknowledged before its outcome is recorded.

While Redis or PostgreSQL is away, reading and recording pause and try again (retry.OUTAGE),
logging one line when the outage starts and one when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import psycopg
import redis
from psycopg_pool import AsyncConnectionPool

from leadctl.compliance.gate import SendGate
from leadctl.config import Settings
from leadctl.connections import AsyncRedisClient, Endpoints, open_async_pool, open_async_redis
from leadctl.masking import mask_contact
from leadctl.providers.base import AUTH_ERROR, ErrorKind, Message, ProviderError, transient
from leadctl.providers.chain import Call, ProviderChain, build_chain
from leadctl.providers.registry import make_session
from leadctl.queue.sifting import CampaignFilter, CampaignSifter
from leadctl.queue.streams import Entry, StreamConsumer
from leadctl.records import Status
from leadctl.retry import OUTAGE, Attempts, Backoff, RetryPolicy, dependency_outage
from leadctl.send import heartbeats
from leadctl.send.metrics import MetricsRecorder
from leadctl.send.segments import segments as count_segments
from leadctl.send.templates import ChannelTemplate, RenderError
from leadctl.store.deliveries import ClaimedLead, DeliveryStore, Outcome

log = logging.getLogger("leadctl.worker")

HEARTBEAT_S = 2.0
LATENCY_SAMPLES = 2000

GIVEN_UP: dict[ErrorKind, Status] = {
    ErrorKind.PERMANENT: Status.FAILED,
    ErrorKind.IN_DOUBT: Status.IN_DOUBT,
    ErrorKind.TRANSIENT: Status.DEAD,  # its attempts ran out
}
"""The final status of a send whose provider error is not (or no longer) retried."""


@contextlib.contextmanager
def _outages_ignored() -> Iterator[None]:
    """For the helpers that try again on their next round: a dependency outage passes, nothing else."""
    try:
        yield
    except Exception as exc:
        if not dependency_outage(exc):
            raise


@dataclass(slots=True)
class WorkerOptions:
    """How one worker process runs.

    channel: the channel whose stream it reads.
    consumer: its name in the consumer group (host:pid by default), unique per process.
    concurrency: sends in flight at most.
    burst: exit once the stream and its pending list are empty.
    max_leads: stop reading after this many entries (None: no limit).
    clock: epoch seconds for quiet hours and frequency caps (tests move it).
    campaigns: send only these campaigns' leads, passing the others over (leadctl.queue.sifting).
    """

    channel: str
    consumer: str
    concurrency: int = 50
    burst: bool = False
    max_leads: int | None = None
    clock: Callable[[], float] = time.time
    campaigns: CampaignFilter | None = None


@dataclass(slots=True)
class WorkerReport:
    """What one worker did: leads per final status (keyed by the plain status names, for JSON), and
    entries it read."""

    consumer: str
    channel: str
    statuses: Counter[str] = field(default_factory=Counter)
    entries: int = 0
    fatal: str | None = None
    latencies_ms: list[float] = field(default_factory=list)
    calls: int = 0

    def tally(self, counts: Mapping[Status, int]) -> None:
        """Count leads per final status."""
        for status, n in counts.items():
            if n:
                self.statuses[status.value] += n

    def sample_latency(self, ms: float) -> None:
        """Keep a uniform sample of provider call times (reservoir sampling, bounded memory)."""
        self.calls += 1
        if len(self.latencies_ms) < LATENCY_SAMPLES:
            self.latencies_ms.append(ms)
        elif (slot := random.randrange(self.calls)) < LATENCY_SAMPLES:
            self.latencies_ms[slot] = ms


def _variables(lead: ClaimedLead) -> dict[str, object]:
    contact_key = "email" if "@" in lead.contact else "phone"
    return {**lead.fields, "name": lead.name, "campaign": lead.campaign, contact_key: lead.contact}


class Worker:
    """One process's send loop over one channel."""

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        redis_client: AsyncRedisClient,
        pool: AsyncConnectionPool,
        provider: ProviderChain,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.options = options
        self.channel_settings = settings.channel(options.channel)
        self.retry = RetryPolicy.for_channel(self.channel_settings, transient)
        self.stream = StreamConsumer(
            redis_client, settings.namespace, options.channel, options.consumer, settings.redis.partitions
        )
        self.pool = pool
        self.store = DeliveryStore(settings.namespace)
        self.provider = provider
        self.template = ChannelTemplate(options.channel, self.channel_settings, settings.campaigns)
        self._packer = provider.packing_route()
        self.stop = stop
        self.report = WorkerReport(options.consumer, options.channel)
        self.gate = SendGate(settings, options.channel, redis_client, options.clock)
        self.metrics = MetricsRecorder(
            redis_client, settings.namespace, options.channel, enabled=settings.worker.metrics
        )
        self._slots = asyncio.Semaphore(options.concurrency)
        self._in_flight: dict[bytes, asyncio.Task[None]] = {}
        self._done: list[tuple[Entry, Outcome]] = []
        self._flush_wanted = asyncio.Event()
        self._reading_finished = False
        self._outage = _Outage(options.consumer)
        self._held: dict[int, bytes] = {}  # lead id -> entry id, from claim until acknowledged
        # leads are read and claimed ahead of the sends, up to twice the concurrency, in batches of
        # the concurrency (each batch is a read, a claim and an acknowledgement; many small ones cost
        # more): at least ``concurrency`` stay in hand, so the sends never wait for a batch
        self._refill_below = options.concurrency * 2 - max(
            1, min(options.concurrency, settings.worker.batch_size)
        )
        self._sifter = (
            CampaignSifter(self.stream, pool, settings.namespace, options.campaigns)
            if options.campaigns is not None
            else None
        )

    # -- reading -------------------------------------------------------------------------------

    async def _read_batch(self, last_reclaim: float) -> tuple[list[Entry], float]:
        worker = self.settings.worker
        room = self.options.concurrency * 2 - len(self._in_flight)
        if self.options.max_leads is not None:
            room = min(room, self.options.max_leads - self.report.entries)
        count = min(worker.batch_size, room)
        await self.gate.promote()  # deferred leads now due go back to the stream
        now = time.monotonic()
        if now - last_reclaim >= worker.visibility_timeout_s / 2:
            reclaimed = await self.stream.reclaim(int(worker.visibility_timeout_s * 1000), count)
            if reclaimed:
                return reclaimed, now
            last_reclaim = now
        block = worker.block_ms if not self._in_flight else min(worker.block_ms, 50)
        return await self.stream.read(count, block), last_reclaim

    async def _drained(self) -> bool:
        return not self._in_flight and not self._done and await self.stream.pending_total() == 0

    async def _reader(self) -> None:
        last_reclaim = 0.0
        backoff = self._outage.backoff("reading")
        while not self.stop.is_set():
            if self.options.max_leads is not None and self.report.entries >= self.options.max_leads:
                break
            if len(self._in_flight) > self._refill_below:
                await asyncio.sleep(0.005)
                continue
            try:
                entries, last_reclaim = await self._read_batch(last_reclaim)
                if not entries:
                    if self.options.burst and await self._drained():
                        break
                    continue
                if self._sifter is not None and not (entries := await self._sifter.sift(entries)):
                    backoff.reset()  # all of other campaigns: passed over
                    continue
                await self._start(entries)
                backoff.reset()
            except Exception as exc:
                if not backoff.retries(exc):
                    raise
                await backoff.wait(exc, self.stop)
        self._reading_finished = True
        self._flush_wanted.set()

    async def _start(self, entries: list[Entry]) -> None:
        self.report.entries += len(entries)
        # a second entry for a lead this worker holds (a requeue, or its own entry reclaimed during
        # an outage) is dropped: the lead's outcome is recorded with the first one
        held_entries = set(self._held.values())
        entries = [e for e in entries if e.entry_id not in held_entries]  # our own, reclaimed: in hand
        duplicates = [e.entry_id for e in entries if e.lead_id in self._held]
        by_lead = {e.lead_id: e for e in entries if e.lead_id is not None and e.lead_id not in self._held}
        if duplicates:
            await self.stream.settle(duplicates)
        poison = [(e, "undecodable entry") for e in entries if e.lead_id is None]
        async with self.pool.connection() as conn, self.gate.atomic(conn):
            result = await self.store.claim(conn, self.options.channel, list(by_lead), self.options.consumer)
            verdict = await self.gate.apply(conn, result.claimed, self.options.consumer)
        result = replace(result, claimed=verdict.send)  # deferred and capped leads are settled below
        poison += [(by_lead[lead_id], "unknown lead") for lead_id in result.unknown]
        claimed_ids = {c.lead_id for c in result.claimed}
        settled = [by_lead[i] for i in by_lead if i not in claimed_ids and i not in result.unknown]
        self.report.tally(
            {
                Status.IN_DOUBT: len(result.in_doubt),
                Status.DEAD: len(poison),
                Status.SUPPRESSED: len(result.suppressed),
                Status.DEFERRED: len(verdict.deferred),
                Status.CAPPED: len(verdict.skipped),
            }
        )
        await self.gate.delay(verdict.deferred)  # before their entries are acknowledged
        await self.stream.settle([e.entry_id for e in settled], poison)
        for lead in result.claimed:
            self._held[lead.lead_id] = by_lead[lead.lead_id].entry_id
        if self._packer is not None and len(result.claimed) > 1:
            items = [(by_lead[lead.lead_id], lead) for lead in result.claimed]
            task = asyncio.create_task(self._send_many(items))
            for entry, _ in items:
                self._in_flight[entry.entry_id] = task
            return
        for lead in result.claimed:
            entry = by_lead[lead.lead_id]
            self._in_flight[entry.entry_id] = asyncio.create_task(self._send(entry, lead))

    # -- sending -------------------------------------------------------------------------------

    async def _send(self, entry: Entry, lead: ClaimedLead) -> None:
        try:
            async with self._slots:
                outcome = await self._attempt(lead)
        except asyncio.CancelledError:  # stopped before its turn came: certainly not sent
            outcome = Outcome.released(lead.lead_id)
        self._in_flight.pop(entry.entry_id, None)
        if outcome.campaign is None:  # the outcomes of sends that went wrong
            outcome = replace(outcome, campaign=lead.campaign)
        self._done.append((entry, outcome))
        if len(self._done) >= self.settings.worker.batch_size:
            self._flush_wanted.set()

    def _message(self, lead: ClaimedLead) -> Message | Outcome:
        """The lead's rendered message, or its dead outcome when its template cannot be rendered."""
        variables = _variables(lead)
        try:
            rendered = self.template.render(variables)
        except RenderError as exc:
            return Outcome.unrenderable(lead.lead_id, str(exc))
        return Message(
            lead.lead_id,
            self.options.channel,
            lead.contact,
            rendered.body,
            rendered.subject,
            rendered.html,
            variables,
        )

    def _failed(self, lead: ClaimedLead, exc: ProviderError, provider: str | None, attempts: int) -> Outcome:
        """The outcome of a send the provider did not accept; refused credentials stop the worker."""
        if exc.code == AUTH_ERROR:
            self.report.fatal = exc.message
            self.stop.set()
            return Outcome.released(lead.lead_id)
        status = GIVEN_UP[exc.kind]
        log.info("lead %s to %s: %s (%s)", lead.lead_id, mask_contact(lead.contact), status, exc.code)
        outcome = Outcome(lead.lead_id, status, provider, None, exc.code, exc.message, attempts - 1)
        return replace(outcome, opted_out=exc.opted_out)

    async def _attempt(
        self, lead: ClaimedLead, message: Message | Outcome | None = None, made: int = 0
    ) -> Outcome:
        """Send one lead, retrying transient errors; ``made``: requests made for it already (packed).

        An attempt is a provider request (PostgreSQL's ``attempts``, the counters' calls): a try that
        open circuits refused made none, so it neither counts nor uses up ``max_attempts``.
        """
        message = self._message(lead) if message is None else message
        if isinstance(message, Outcome):
            return message
        call = Call()
        attempts = Attempts(
            self.retry, lambda: made + len(call.requests)
        )  # a request is counted when it ends, or is cut off
        try:
            result = await attempts.run(self.provider.send, message, call)
        except asyncio.CancelledError:  # the shutdown grace period ran out
            if not call.in_request:  # waiting for a token or between attempts: certainly not sent
                return Outcome.released(lead.lead_id)
            return Outcome.cut_off(lead.lead_id, call.provider, attempts.made - 1)
        except ProviderError as exc:
            return self._failed(lead, exc, call.provider, attempts.made)
        finally:
            self._observe(call, lead.campaign)
        return Outcome.sent(
            lead.lead_id,
            call.provider,
            result.message_id,
            attempts.made - 1,
            lead.campaign,
            self._segments(message, result.segments),
        )

    async def _send_many(self, items: list[tuple[Entry, ClaimedLead]]) -> None:
        """Send one read batch through a provider that packs many messages per request (SendGrid:
        up to 1,000 personalizations); leads it answers with a transient error are retried one by one."""
        route = self._packer
        assert route is not None
        messages = {lead.lead_id: self._message(lead) for _, lead in items}
        ready = [m for m in messages.values() if isinstance(m, Message)]
        outcomes: dict[int, Outcome] = {i: m for i, m in messages.items() if isinstance(m, Outcome)}
        calling = False
        try:
            async with self._slots:
                await route.throttle.acquire(len(ready))
                calling, began = True, time.perf_counter()
                answers = await route.provider.send_many(ready)
                calling, seconds = False, time.perf_counter() - began
            by_id = {lead.lead_id: lead for _, lead in items}
            retry = []
            for message, answer in zip(ready, answers, strict=True):
                lead = by_id[message.lead_id]
                self.metrics.observe(route.provider.name, lead.campaign, seconds)
                if (
                    isinstance(answer, ProviderError)
                    and answer.kind == ErrorKind.TRANSIENT
                    and answer.code != AUTH_ERROR
                ):
                    retry.append((lead, message))
                elif isinstance(answer, ProviderError):
                    outcomes[lead.lead_id] = self._failed(lead, answer, route.provider.name, 1)
                else:
                    outcomes[lead.lead_id] = Outcome.sent(
                        lead.lead_id, route.provider.name, answer.message_id
                    )
            self.report.sample_latency(seconds * 1000)
            retried = await asyncio.gather(*(self._attempt(lead, message, made=1) for lead, message in retry))
            outcomes.update((outcome.lead_id, outcome) for outcome in retried)
        except asyncio.CancelledError:  # cut off by the end of the grace period
            for message in ready:
                outcomes.setdefault(
                    message.lead_id,
                    Outcome.cut_off(message.lead_id, route.provider.name)
                    if calling
                    else Outcome.released(message.lead_id),
                )
        for entry, lead in items:
            self._in_flight.pop(entry.entry_id, None)
            self._done.append((entry, replace(outcomes[lead.lead_id], campaign=lead.campaign)))
        self._flush_wanted.set()

    def _segments(self, message: Message, billed: int | None) -> int | None:
        """SMS segments: as the provider billed them when it says, else counted from the text."""
        if self.options.channel != "sms":
            return None
        return billed if billed is not None else count_segments(message.body)

    def _observe(self, call: Call, campaign: str) -> None:
        """Each provider request's duration (not the wait for a token), for `stats` and the report."""
        for provider, seconds in call.requests:
            self.metrics.observe(provider, campaign, seconds)
            self.report.sample_latency(seconds * 1000)

    # -- recording -----------------------------------------------------------------------------

    async def _flusher(self) -> None:
        backoff = self._outage.backoff("recording")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), timeout=0.05)
            self._flush_wanted.clear()
            if self._done:
                batch, self._done = self._done, []
                try:
                    await self._record(batch)
                    backoff.reset()
                except Exception as exc:
                    if not backoff.retries(exc):
                        raise
                    self._done[:0] = batch
                    await backoff.wait(exc, None)
                    continue
            if self._reading_finished and not self._in_flight and not self._done:
                return

    async def _record(self, batch: list[tuple[Entry, Outcome]]) -> None:
        async with self.pool.connection() as conn:
            await self.store.record(conn, [outcome for _, outcome in batch])
        acked: list[bytes] = []
        dead: list[tuple[Entry, str]] = []
        finished: list[Outcome] = []
        released, given_up = Status.QUEUED, Status.DEAD  # bound once: Status.X is a slow lookup on 3.11
        for entry, outcome in batch:
            if outcome.status == released:  # never sent: stays pending in the stream, to be reclaimed
                continue
            finished.append(outcome)
            if outcome.status == given_up:
                dead.append((entry, outcome.error_message or "dead"))
            else:
                acked.append(entry.entry_id)
        await self.stream.settle(acked, dead)
        await self.metrics.record(finished)
        self.report.tally(Counter(outcome.status for outcome in finished))
        for _, outcome in batch:
            self._held.pop(outcome.lead_id, None)

    async def _renewer(self) -> None:
        """Keep the entries of slow sends from being reclaimed by other workers."""
        period = self.settings.worker.visibility_timeout_s / 3
        while True:
            await asyncio.sleep(period)
            held = list(self._in_flight) + [entry.entry_id for entry, _ in self._done]
            with _outages_ignored():
                await self.stream.renew(held)

    async def _heartbeat(self) -> None:
        """Tell the fleet this worker is alive, and how fast it sends, every couple of seconds."""
        host, pid = socket.gethostname(), os.getpid()
        last_time, last_sent = time.monotonic(), 0
        while True:
            now, sent = time.monotonic(), self.report.statuses.get(Status.SENT, 0)
            beat = heartbeats.Heartbeat(
                self.options.consumer,
                host,
                pid,
                self.options.channel,
                round((sent - last_sent) / max(now - last_time, 1e-9), 1),
                sent,
                time.time(),
            )
            last_time, last_sent = now, sent
            with _outages_ignored():
                await heartbeats.publish(self.stream.client, self.settings.namespace, beat)
            await asyncio.sleep(HEARTBEAT_S)

    async def _finish_in_flight(self) -> None:
        """After a stop, give in-flight sends the grace period, then cut them off."""
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        grace = self.settings.worker.shutdown_grace_s if self.stop.is_set() else None
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def run(self) -> WorkerReport:
        await self.stream.ensure_group()
        flusher = asyncio.create_task(self._flusher())
        helpers = [asyncio.create_task(c) for c in (self._renewer(), self._heartbeat())]
        try:
            await self._reader()
            await self._finish_in_flight()
            await flusher
            await self.metrics.flush()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            with _outages_ignored():
                await heartbeats.retire(self.stream.client, self.settings.namespace, self.options.consumer)
        return self.report


class _Outage:
    """Logs one line when a dependency first fails and one when all is well again, not one per retry."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.failing: set[str] = set()

    def failed(self, part: str, exc: BaseException) -> None:
        if not self.failing:
            text = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
            log.warning(
                "worker %s: %s (%s); pausing and retrying", self.consumer, _dependency_name(exc), text
            )
        self.failing.add(part)

    def recovered(self, part: str) -> None:
        if part in self.failing:
            self.failing.discard(part)
            if not self.failing:
                log.warning("worker %s: dependencies are back; resuming", self.consumer)

    def backoff(self, part: str) -> Backoff:
        """The OUTAGE backoff of one part of the worker (reading or recording), reporting here."""
        return Backoff(OUTAGE, lambda exc, _: self.failed(part, exc), lambda: self.recovered(part))


def _dependency_name(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return "PostgreSQL unavailable"
    if isinstance(exc, redis.RedisError | redis.exceptions.RedisClusterException | RuntimeError):
        return "Redis unavailable"
    return "connection failed"


async def run_worker(
    settings: Settings, endpoints: Endpoints, options: WorkerOptions, stop: asyncio.Event
) -> WorkerReport:
    """Connect, run one worker until drained (burst), ``max_leads`` or ``stop``, and clean up."""
    redis_client = await open_async_redis(endpoints.redis_url, settings)
    pool = await open_async_pool(
        endpoints.database_url,
        settings,
        max_size=min(settings.database.worker_pool_size, settings.database.pool_size),
    )
    session = make_session(options.concurrency)
    provider: ProviderChain | None = None
    try:
        provider = build_chain(settings, options.channel, session, redis_client)
        worker = Worker(settings, options, redis_client, pool, provider, stop)
        return await worker.run()
    finally:
        for route in provider.routes if provider else ():
            close = getattr(route.provider, "close", None)  # pooled SMTP connections
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        await session.close()
        await pool.close()
        await redis_client.aclose()
