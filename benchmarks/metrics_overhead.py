"""What publishing stats counters costs the send pipeline, measured in one run.

The same burst (N generated sms leads drained by W worker processes through the sandbox provider,
zero latency, in its own process) runs with ``worker.metrics`` on and off, alternating ROUNDS
times so drift hits both alike; the overhead is 1 - median(on) / median(off). A micro-benchmark
also times ``MetricsRecorder`` alone on 1,000-outcome batches against the real Redis.

Usage: python benchmarks/metrics_overhead.py [LEADS] [WORKERS] [CONCURRENCY] [ROUNDS]
(Redis and PostgreSQL from the usual config / LEADCTL_* variables; embedded ones otherwise.)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import orjson

from leadctl import keys, queue
from leadctl.config import Settings, load_settings
from leadctl.connections import Endpoints, open_async_redis, open_postgres, open_redis, resolve_endpoints
from leadctl.leads import Lead
from leadctl.metrics import MetricsRecorder
from leadctl.pool import PoolSpec, Supervisor
from leadctl.providers.sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SandboxProcess
from leadctl.store.deliveries import Outcome
from leadctl.store.leads import LeadWriter
from leadctl.store.migrations import drop_namespace

DEFAULTS = (30_000, 2, 100, 3)  # leads, workers, concurrency, rounds


def _settings(base: Settings, sandbox_url: str, namespace: str, concurrency: int, metrics: bool) -> Settings:
    data = base.model_dump(by_alias=True)
    data["namespace"] = namespace
    data["worker"]["metrics"] = metrics
    data["providers"]["bench"] = {
        "type": "twilio",
        "base_url": sandbox_url,
        "account_sid": SANDBOX_ACCOUNT_SID,
        "auth_token": SANDBOX_AUTH_TOKEN,
        "from": "+15005550006",
        "price": 0.0079,
    }
    data["channels"]["sms"].update(provider="bench", template="Oi {{ name }}!", concurrency=concurrency)
    return Settings.model_validate(data)


def burst(settings: Settings, endpoints: Endpoints, leads: int, workers: int, concurrency: int) -> float:
    """Queue ``leads`` and drain them; leads/min from the first claim to the last outcome."""
    namespace = settings.namespace
    client = open_redis(endpoints.redis_url, settings)
    conn = open_postgres(endpoints.database_url, settings)
    try:
        writer = LeadWriter(namespace)
        queue.ensure_group(client, namespace, "sms")
        for start in range(0, leads, 5000):
            batch = [
                Lead("sms", f"+55119{i:08d}", f"Lead {i}", "bench", i + 2, phone=f"+55119{i:08d}")
                for i in range(start, min(leads, start + 5000))
            ]
            queue.enqueue(
                client, namespace, [(r.channel, r.lead_id) for r in writer.record(conn, batch, "b")]
            )
        Supervisor(settings, endpoints, [PoolSpec("sms", workers, concurrency)], burst=True).run()
        first, last, sent = conn.execute(
            f'SELECT min(claimed_at), max(finished_at), count(*) FROM "{namespace}".deliveries '
            "WHERE status = 'sent'"
        ).fetchone()
        assert sent == leads, f"only {sent} of {leads} sent"
        return sent / (last - first).total_seconds() * 60
    finally:
        stale = list(client.scan_iter(match=keys.namespace_pattern(namespace), count=1000))
        if stale:
            client.delete(*stale)
        drop_namespace(conn, namespace)
        conn.close()
        client.close()


async def recorder_cost(settings: Settings, endpoints: Endpoints, batches: int = 200) -> float:
    """Microseconds per lead of observing and recording 1,000-outcome batches (Redis round trip included)."""
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    client = await open_async_redis(endpoints.redis_url, settings)
    recorder = MetricsRecorder(client, namespace, "sms")
    outcomes = [
        Outcome(
            i, "sent" if i % 20 else "failed", "bench", campaign=f"c{i % 3}", extra_attempts=int(i % 7 == 0)
        )
        for i in range(1000)
    ]
    started = time.perf_counter()
    for _ in range(batches):
        for i, outcome in enumerate(outcomes):
            recorder.observe("bench", outcome.campaign, 0.002 + (i % 50) / 1000)
        await recorder.record(outcomes)
    elapsed = time.perf_counter() - started
    stale = [key async for key in client.scan_iter(match=keys.namespace_pattern(namespace), count=1000)]
    if stale:
        await client.delete(*stale)
    await client.aclose()
    return elapsed / (batches * len(outcomes)) * 1e6


def main() -> None:
    args = [int(a) for a in sys.argv[1:5]]
    leads, workers, concurrency, rounds = (*args, *DEFAULTS[len(args) :])
    base = load_settings()
    endpoints = resolve_endpoints(base, lambda line: print(line, file=sys.stderr))
    rates: dict[bool, list[float]] = {True: [], False: []}
    with SandboxProcess() as sandbox:
        for index in range(rounds):
            for metrics in (True, False) if index % 2 == 0 else (False, True):
                namespace = f"bench_{uuid.uuid4().hex[:8]}"
                settings = _settings(base, sandbox.base_url, namespace, concurrency, metrics)
                rate = burst(settings, endpoints, leads, workers, concurrency)
                rates[metrics].append(rate)
                state = "on " if metrics else "off"
                print(f"round {index + 1}: metrics {state} {rate:,.0f} leads/min", file=sys.stderr)
                sandbox.reset()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    result = {
        "leads": leads,
        "workers": workers,
        "concurrency": concurrency,
        "rounds": rounds,
        "leads_per_min_metrics_on": [round(r) for r in rates[True]],
        "leads_per_min_metrics_off": [round(r) for r in rates[False]],
        "median_on": round(on),
        "median_off": round(off),
        "overhead_pct": round((1 - on / off) * 100, 2),
        "recorder_us_per_lead": round(asyncio.run(recorder_cost(base, endpoints)), 3),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
