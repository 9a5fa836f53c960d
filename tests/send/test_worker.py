"""The send loop in-process, as arq tests its Worker: the real ``run_worker`` in this test's event
loop, against the test's real Redis and PostgreSQL, sending over real HTTP to the sandbox provider
running in a thread. Reading and claiming, recording outcomes, retrying, dead letters, reclaiming a
dead consumer's entries, and shutdown, each checked in PostgreSQL, in the stream and at the sandbox.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import redis

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_async_pool, open_async_redis, open_postgres
from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, sandbox_in_thread
from leadctl.queue import keys, streams
from leadctl.queue.streams import Depth, StreamConsumer
from leadctl.records import Lead
from leadctl.send.worker import WorkerOptions, WorkerReport, run_worker
from leadctl.store.deliveries import DeliveryStore
from leadctl.store.leads import LeadWriter

INVALID = "+15005550001"  # the sandbox answers Twilio's 21211 (invalid number): a permanent error
TIMEOUT_S = 60.0
"""A run that is not over by then has hung: the test fails instead of waiting for ever."""


def _phone(i: int) -> str:
    return f"+55119{8000_0000 + i:08d}"


def _settings(
    settings: Settings, base_url: str, *, worker: dict[str, Any] | None = None, **sms: Any
) -> Settings:
    """The test's settings sending sms through the sandbox at ``base_url``; a breaker that never
    opens (an open one would make a retry wait for its reset, not for the retry policy)."""
    data = settings.model_dump(mode="json", by_alias=True)
    data["channels"] = {"sms": {"provider": "twilio", "template": "Oi {{ name }}!", **sms}}
    data["providers"] = {
        "twilio": {
            "base_url": base_url,
            "account_sid": SANDBOX_ACCOUNT_SID,
            "auth_token": SANDBOX_AUTH_TOKEN,
            "from": "+15005550006",
            "breaker_failures": 1_000_000,
        }
    }
    data["worker"] = {**data["worker"], **(worker or {})}
    return Settings.model_validate(data)


def _queue(settings: Settings, client: redis.Redis, contacts: list[str]) -> list[int]:
    """Record leads for ``contacts`` as ingest does and queue them; their ids, in order."""
    leads = [
        Lead("sms", contact, f"Lead {i}", "c1", i + 2, phone=contact) for i, contact in enumerate(contacts)
    ]
    with open_postgres(settings.database.url or "", settings) as conn:
        recorded = LeadWriter(settings.namespace).record(conn, leads, "test")
    streams.enqueue(client, settings.namespace, [("sms", r.lead_id) for r in recorded])
    return [r.lead_id for r in recorded]


def _options(**options: Any) -> WorkerOptions:
    return WorkerOptions("sms", f"test:{uuid.uuid4().hex[:8]}", **options)


async def _run(settings: Settings, options: WorkerOptions, stop: asyncio.Event | None = None) -> WorkerReport:
    endpoints = Endpoints(settings.redis.url or "", settings.database.url or "")
    return await asyncio.wait_for(
        run_worker(settings, endpoints, options, stop or asyncio.Event()), TIMEOUT_S
    )


def _burst(settings: Settings, **options: Any) -> WorkerReport:
    """One worker until the queue and its pending entries are empty."""
    return asyncio.run(_run(settings, _options(burst=True, **options)))


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition``, checked every 10 ms, without blocking the loop the worker runs in."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _stopped(
    settings: Settings, condition: Callable[[], bool], what: str, **options: Any
) -> WorkerReport:
    """Run a worker (not in burst) and set its stop event once ``condition`` holds."""
    stop = asyncio.Event()
    worker = asyncio.create_task(_run(settings, _options(**options), stop))
    await _until(condition, what)
    stop.set()
    return await worker


def _rows(pg: psycopg.Connection, namespace: str) -> dict[int, tuple[Any, ...]]:
    """lead id -> (status, attempts, error_code, provider_message_id) of every lead, queued or not."""
    rows = pg.execute(
        "SELECT lead_id, status, attempts, error_code, provider_message_id"
        f' FROM "{namespace}".lead_deliveries'
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def _depth(client: redis.Redis, namespace: str) -> Depth:
    return streams.depth(client, namespace, "sms")


def test_reads_claims_and_records_a_batch_across_two_workers(
    settings: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    """Two workers share the stream in small batches: each lead is claimed by one of them, sent
    once, recorded with its provider message id, and its entry acknowledged and deleted."""
    contacts = [_phone(i) for i in range(40)] + [INVALID]
    with sandbox_in_thread() as sandbox:
        configured = _settings(settings, sandbox.base_url, worker={"batch_size": 4})
        ids = _queue(configured, redis_client, contacts)

        async def two() -> list[WorkerReport]:
            options = [_options(burst=True, concurrency=3) for _ in range(2)]
            return list(await asyncio.gather(*(_run(configured, o) for o in options)))

        reports = asyncio.run(two())
        messages = sandbox.messages()
        stats = sandbox.stats()

    assert sum(r.entries for r in reports) == 41
    assert [r.statuses["sent"] + r.statuses["failed"] for r in reports] == [r.entries for r in reports]
    assert sum(r.statuses["sent"] for r in reports) == 40
    rows = _rows(pg, settings.namespace)
    invalid = ids[-1]
    assert rows.pop(invalid)[:3] == ("failed", 1, "21211")  # a permanent error: not tried again
    assert {row[:3] for row in rows.values()} == {("sent", 1, None)}
    assert {row[3] for row in rows.values()} == {m["sid"] for m in messages}
    assert sorted(m["to"] for m in messages) == sorted(contacts[:-1])
    assert (stats["accepted"], stats["duplicates"], stats["requests"]) == (40, 0, 41)
    assert _depth(redis_client, settings.namespace) == Depth(0, 0)
    assert redis_client.xlen(keys.stream(settings.namespace, "sms", 0)) == 0  # acknowledged and deleted


def test_transient_errors_are_retried_and_every_attempt_counted(
    settings: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    """The sandbox answers 30% of requests 500: those sends are tried again (after the retry
    policy's short pauses) until accepted, and each lead's attempts count its requests."""
    with sandbox_in_thread(error_rate=0.3, seed=11) as sandbox:
        configured = _settings(
            settings, sandbox.base_url, max_attempts=10, retry_initial_ms=1, retry_max_ms=20
        )
        _queue(configured, redis_client, [_phone(i) for i in range(30)])
        report = _burst(configured, concurrency=5)
        stats = sandbox.stats()

    assert dict(report.statuses) == {"sent": 30}
    rows = _rows(pg, settings.namespace)
    attempts = [row[1] for row in rows.values()]
    assert {row[0] for row in rows.values()} == {"sent"}
    assert stats["errors"] > 0 and max(attempts) > 1
    assert sum(attempts) == stats["requests"] == 30 + stats["errors"]
    assert (stats["accepted"], stats["duplicates"]) == (30, 0)
    assert _depth(redis_client, settings.namespace) == Depth(0, 0)


def test_a_send_failing_max_attempts_times_goes_to_the_dead_letters(
    settings: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    with sandbox_in_thread(error_rate=1.0) as sandbox:
        configured = _settings(settings, sandbox.base_url, max_attempts=3, retry_initial_ms=1, retry_max_ms=5)
        ids = _queue(configured, redis_client, [_phone(i) for i in range(5)])
        report = _burst(configured)
        stats = sandbox.stats()

    assert dict(report.statuses) == {"dead": 5}
    assert {row[:2] for row in _rows(pg, settings.namespace).values()} == {("dead", 3)}
    assert (stats["requests"], stats["accepted"]) == (15, 0)
    letters = redis_client.xrange(keys.dead_letters(settings.namespace, "sms"))
    assert sorted(int(fields[b"lead"]) for _, fields in letters) == sorted(ids)
    assert _depth(redis_client, settings.namespace) == Depth(0, 0)


def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(
    settings: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    """A consumer read six entries and died: before claiming four of them, and mid-send for two.
    Once they have been idle for the visibility timeout, a worker reclaims them (XAUTOCLAIM):
    it sends the four, and marks the two in doubt without sending them again."""
    configured = _settings(settings, "http://127.0.0.1:9", worker={"visibility_timeout_s": 0.5})
    ids = _queue(configured, redis_client, [_phone(i) for i in range(6)])

    async def die_mid_send() -> None:
        client = await open_async_redis(configured.redis.url or "", configured)
        consumer = StreamConsumer(client, settings.namespace, "sms", "dead-consumer")
        await consumer.ensure_group()
        assert [e.lead_id for e in await consumer.read(6, None)] == ids
        pool = await open_async_pool(configured.database.url or "", configured, max_size=1)
        async with pool.connection() as conn:
            claimed = await DeliveryStore(settings.namespace).claim(conn, "sms", ids[:2], "dead-consumer")
        assert [lead.lead_id for lead in claimed.claimed] == ids[:2]
        await pool.close()
        await client.aclose()

    asyncio.run(die_mid_send())
    assert _depth(redis_client, settings.namespace) == Depth(0, 6)
    with sandbox_in_thread() as sandbox:
        report = _burst(_settings(configured, sandbox.base_url))
        sent_to = sorted(m["to"] for m in sandbox.messages())

    assert report.entries == 6 and dict(report.statuses) == {"sent": 4, "in_doubt": 2}
    rows = _rows(pg, settings.namespace)
    assert [rows[i][:3] for i in ids[:2]] == [("in_doubt", 1, "claimed_unfinished")] * 2
    assert [rows[i][:2] for i in ids[2:]] == [("sent", 1)] * 4
    assert sent_to == [_phone(i) for i in range(2, 6)]
    assert _depth(redis_client, settings.namespace) == Depth(0, 0)


def test_a_stop_lets_sends_in_flight_finish_within_the_grace_period(
    settings: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    """Stopped while its first sends are at the provider, the worker reads nothing more and waits
    for the leads it holds: each is sent and recorded; the unread ones stay queued for the next
    worker, which sends them, and nobody gets a message twice."""
    with sandbox_in_thread(latency_ms=200, latency_p99_ms=200) as sandbox:
        configured = _settings(settings, sandbox.base_url, worker={"shutdown_grace_s": 30})
        ids = _queue(configured, redis_client, [_phone(i) for i in range(8)])
        report = asyncio.run(
            _stopped(configured, lambda: sandbox.stats()["requests"] >= 1, "a send", concurrency=2)
        )
        first = sandbox.stats()["accepted"]

        rows = _rows(pg, settings.namespace)
        held = [i for i in ids if rows[i][0] != "queued"]
        assert dict(report.statuses) == {"sent": len(held)} and report.entries == len(held) >= 1
        assert {rows[i][:2] for i in held} == {("sent", 1)} and first == len(held) < len(ids)
        assert _depth(redis_client, settings.namespace) == Depth(len(ids) - len(held), 0)

        again = _burst(configured)
        stats = sandbox.stats()

    assert dict(again.statuses) == {"sent": len(ids) - len(held)}
    assert {row[:2] for row in _rows(pg, settings.namespace).values()} == {("sent", 1)}
    assert (stats["accepted"], stats["duplicates"]) == (len(ids), 0)


def test_a_stop_past_the_grace_period_leaves_sends_in_doubt_and_releases_the_rest(
    settings: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    """The provider takes the first two requests and never answers. Stopped with a short grace
    period, the worker ends those two in doubt (they may have been sent) and releases the two it
    held but never started (queued again, their entries left pending to be reclaimed). A later
    worker sends the released and the unread leads, and never the ones in doubt."""
    with sandbox_in_thread(timeout_rate=1.0, hang_s=TIMEOUT_S) as hanging:
        configured = _settings(
            settings, hanging.base_url, worker={"shutdown_grace_s": 0.2, "visibility_timeout_s": 0.5}
        )
        contacts = [_phone(i) for i in range(6)]
        ids = _queue(configured, redis_client, contacts)
        report = asyncio.run(
            _stopped(configured, lambda: hanging.stats()["hung"] == 2, "two hung sends", concurrency=2)
        )
        started = {m["to"] for m in hanging.messages()}

    # concurrency 2: the first four entries read and claimed (twice the concurrency), two started
    assert report.entries == 4 and dict(report.statuses) == {"in_doubt": 2}
    lead_of = dict(zip(contacts, ids, strict=True))
    in_doubt = [lead_of[c] for c in contacts if c in started]
    released = [lead_of[c] for c in contacts[:4] if c not in started]
    assert len(in_doubt) == len(released) == 2
    rows = _rows(pg, settings.namespace)
    assert [rows[i][:3] for i in in_doubt] == [("in_doubt", 1, "shutdown")] * 2
    assert [rows[i][:3] for i in released] == [("queued", 0, None)] * 2  # no attempt counted
    assert [rows[i][:2] for i in ids[4:]] == [("queued", 0)] * 2  # never read
    assert _depth(redis_client, settings.namespace) == Depth(2, 2)  # released ones still pending

    with sandbox_in_thread() as sandbox:
        again = _burst(_settings(configured, sandbox.base_url))
        sent_to = sorted(m["to"] for m in sandbox.messages())

    assert dict(again.statuses) == {"sent": 4}
    assert sent_to == sorted(set(contacts) - started)  # each once, none of those in doubt
    rows = _rows(pg, settings.namespace)
    assert {i: rows[i][:2] for i in ids} == {
        i: ("in_doubt", 1) if i in in_doubt else ("sent", 1) for i in ids
    }
    assert _depth(redis_client, settings.namespace) == Depth(0, 0)
