"""What publishing stats counters costs the send pipeline, measured in one run.

The same burst (N generated sms leads drained by W worker processes through the sandbox provider,
zero latency, in its own process) runs with ``worker.metrics`` on and off, alternating ROUNDS
times so drift hits both alike. Two overheads: of throughput, 1 - median(on) / median(off), and of
the worker processes' CPU time per lead (what bounds throughput on a busy 2-core box, and what other
load on the machine disturbs least). A micro-benchmark also measures ``MetricsRecorder`` alone (CPU per
lead, 50-outcome batches, real Redis), publishing once a second as workers do and, for comparison,
once per batch.

Usage: python leadctl/bench/metrics_overhead.py [LEADS] [WORKERS] [CONCURRENCY] [ROUNDS]
(Redis and PostgreSQL from the usual config / LEADCTL_* variables; embedded ones otherwise.)
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import time
import uuid

import orjson

from leadctl.config import Settings, load_settings
from leadctl.connections import Endpoints, open_async_redis, open_postgres, open_redis
from leadctl.local.namespaces import purge_namespace
from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SandboxProcess
from leadctl.local.services import resolve_endpoints
from leadctl.queue import keys, streams
from leadctl.records import Lead, Status
from leadctl.send.metrics import FLUSH_EVERY_S, MetricsRecorder
from leadctl.send.supervisor import PoolSpec, Supervisor
from leadctl.store.deliveries import Outcome
from leadctl.store.leads import LeadWriter

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


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def burst(
    settings: Settings, endpoints: Endpoints, leads: int, workers: int, concurrency: int
) -> tuple[float, float]:
    """Queue ``leads`` and drain them: leads/min (first claim to last outcome), workers' CPU us per lead."""
    namespace = settings.namespace
    client = open_redis(endpoints.redis_url, settings)
    conn = open_postgres(endpoints.database_url, settings)
    try:
        writer = LeadWriter(namespace)
        streams.ensure_group(client, namespace, "sms")
        for start in range(0, leads, 5000):
            batch = [
                Lead("sms", f"+55119{i:08d}", f"Lead {i}", "bench", i + 2, phone=f"+55119{i:08d}")
                for i in range(start, min(leads, start + 5000))
            ]
            streams.enqueue(
                client, namespace, [(r.channel, r.lead_id) for r in writer.record(conn, batch, "b")]
            )
        cpu_before = _children_cpu_s()
        Supervisor(settings, endpoints, [PoolSpec("sms", workers, concurrency)], burst=True).run()
        cpu_us = (_children_cpu_s() - cpu_before) / leads * 1e6
        first, last, sent = conn.execute(
            f'SELECT min(claimed_at), max(finished_at), count(*) FROM "{namespace}".deliveries '
            "WHERE status = 'sent'"
        ).fetchone()
        assert sent == leads, f"only {sent} of {leads} sent"
        return sent / (last - first).total_seconds() * 60, cpu_us
    finally:
        conn.close()
        purge_namespace(client, endpoints.database_url, namespace)
        client.close()


async def recorder_cost(settings: Settings, endpoints: Endpoints, flush_every_s: float) -> float:
    """CPU microseconds per lead of counting 200,000 outcomes in 50-outcome batches (a worker's flushes)
    and publishing them to the real Redis at most every ``flush_every_s``."""
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    client = await open_async_redis(endpoints.redis_url, settings)
    recorder = MetricsRecorder(client, namespace, "sms", flush_every_s=flush_every_s)
    outcomes = [
        Outcome(
            i,
            Status.SENT if i % 20 else Status.FAILED,
            "bench",
            campaign=f"c{i % 3}",
            extra_attempts=int(i % 7 == 0),
        )
        for i in range(50)
    ]
    batches = 4000
    started = time.process_time()
    for _ in range(batches):
        for i, outcome in enumerate(outcomes):
            recorder.observe("bench", outcome.campaign, 0.002 + i / 1000)
        await recorder.record(outcomes)
    await recorder.flush()
    elapsed = time.process_time() - started
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
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with SandboxProcess() as sandbox:
        for index in range(rounds):
            for metrics in (True, False) if index % 2 == 0 else (False, True):
                namespace = f"bench_{uuid.uuid4().hex[:8]}"
                settings = _settings(base, sandbox.base_url, namespace, concurrency, metrics)
                rate, cpu_us = burst(settings, endpoints, leads, workers, concurrency)
                rates[metrics].append(rate)
                cpu[metrics].append(cpu_us)
                state = "on " if metrics else "off"
                print(
                    f"round {index + 1}: metrics {state} {rate:,.0f} leads/min, {cpu_us:,.0f} us CPU/lead",
                    file=sys.stderr,
                )
                sandbox.reset()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    cpu_on, cpu_off = statistics.median(cpu[True]), statistics.median(cpu[False])
    result = {
        "leads": leads,
        "workers": workers,
        "concurrency": concurrency,
        "rounds": rounds,
        "leads_per_min_metrics_on": [round(r) for r in rates[True]],
        "leads_per_min_metrics_off": [round(r) for r in rates[False]],
        "median_on": round(on),
        "median_off": round(off),
        "throughput_overhead_pct": round((1 - on / off) * 100, 2),
        "worker_cpu_us_per_lead_on": [round(c) for c in cpu[True]],
        "worker_cpu_us_per_lead_off": [round(c) for c in cpu[False]],
        "cpu_overhead_pct": round((cpu_on / cpu_off - 1) * 100, 2),
        "recorder_cpu_us_per_lead": round(asyncio.run(recorder_cost(base, endpoints, FLUSH_EVERY_S)), 3),
        "recorder_cpu_us_per_lead_publishing_every_batch": round(
            asyncio.run(recorder_cost(base, endpoints, 0.0)), 3
        ),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
