"""`leadctl bench dispatch`: end-to-end send throughput against the machine's raw HTTP ceiling.

In one run: start the sandbox provider in its own process with zero latency, queue N generated
leads, drain them with ``work --burst`` (W worker processes), then post the same number of messages
to the same sandbox with the same HTTP client and no queue and no database (the raw ceiling). The
ratio of the two says how much the pipeline (claim, record, ack, count) costs.

The result is saved as JSON in ``<data_dir>/bench/dispatch.json`` (the latest run), where
`leadctl plan` reads the measured throughput per worker.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg
from redis.cluster import RedisCluster

from leadctl.bench.backends import client_backends
from leadctl.config import Settings
from leadctl.connections import Endpoints, RedisClient, open_postgres, open_redis
from leadctl.local.namespaces import purge_namespace
from leadctl.ops.measured import DispatchBenchResult, save_result
from leadctl.providers.base import Message
from leadctl.providers.registry import create_provider, make_session
from leadctl.queue import streams
from leadctl.records import Lead
from leadctl.send.eventloop import run_loop, settle_collector
from leadctl.send.supervisor import PoolSpec, Supervisor
from leadctl.store.leads import LeadWriter

DEFAULT_CONCURRENCY = 200
"""Sends in flight per worker: with a provider that answers at once, 100 left both cores partly idle
(each worker waits on its claim and record round trips) and 300 made workers heavier for no gain."""


def _bench_settings(settings: Settings, sandbox_url: str, namespace: str, concurrency: int) -> Settings:
    # the sandbox's modules (aiohttp.web, its callbacks) are imported where they are used: a script
    # importing this module is its workers' main module too, and they would all carry them
    from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

    data = settings.model_dump(by_alias=True)
    data["namespace"] = namespace
    data["providers"]["bench"] = {
        "type": "twilio",
        "base_url": sandbox_url,
        "account_sid": SANDBOX_ACCOUNT_SID,
        "auth_token": SANDBOX_AUTH_TOKEN,
        "from": "+15005550006",
    }
    data["channels"]["sms"].update(provider="bench", template="Oi {{ name }}!", concurrency=concurrency)
    return Settings.model_validate(data)


def _queue_leads(
    conn: psycopg.Connection, client: RedisClient, namespace: str, count: int, partitions: int
) -> None:
    writer = LeadWriter(namespace)
    streams.ensure_group(client, namespace, "sms", partitions)
    for start in range(0, count, 5000):
        leads = [
            Lead("sms", f"+55119{i:08d}", f"Lead {i}", "bench", i + 2, phone=f"+55119{i:08d}")
            for i in range(start, min(count, start + 5000))
        ]
        recorded = writer.record(conn, leads, "bench")
        streams.enqueue(client, namespace, [(r.channel, r.lead_id) for r in recorded], partitions)


def _wal_position(conn: psycopg.Connection) -> str:
    return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])


def _primaries(client: RedisClient) -> int:
    return len(client.get_primaries()) if isinstance(client, RedisCluster) else 1


def _info(client: RedisClient, section: str) -> list[dict[str, Any]]:
    """One INFO section of every primary."""
    if isinstance(client, RedisCluster):
        return list(client.info(section, target_nodes=RedisCluster.PRIMARIES).values())
    return [client.info(section)]


def _commands_processed(client: RedisClient) -> int:
    """Commands Redis has run, on every primary of a cluster (scripts' inner commands included)."""
    return sum(int(info["total_commands_processed"]) for info in _info(client, "stats"))


def _redis_cpu_s(client: RedisClient) -> float:
    return sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in _info(client, "cpu"))


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class _WorkerSampler(threading.Thread):
    """Every 100 ms: peak resident memory and CPU of each worker process (children of this one) and
    of the PostgreSQL backends serving them (found through their sockets, sampled while they live)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.peak: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.backend_cpu: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        port = urlsplit(self.database_url).port or 5432
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            tick = 0
            while not self.done.wait(0.1):
                tick += 1
                workers = [c for c in me.children() if _is_worker(c)]
                for child in workers:
                    try:
                        self.peak[child.pid] = max(self.peak.get(child.pid, 0), child.memory_info().rss)
                        self.cpu[child.pid] = _cpu_s(child)
                    except psutil.Error:
                        continue
                # looking through sockets costs CPU the benchmark would miss: once a second
                found = client_backends(conn, workers, port) if tick % 10 == 1 else set()
                for pid in {*found, *self.backend_cpu}:
                    try:
                        self.backend_cpu[pid] = _cpu_s(psutil.Process(pid))
                    except psutil.Error:
                        continue


def _is_worker(process: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _raw_sender(base_url: str, count: int, concurrency: int, results: Any) -> None:
    """One process posting ``count`` messages with the worker's own HTTP client and provider."""
    settings = _bench_settings(Settings(), base_url, "raw", concurrency)

    async def main() -> None:
        session = make_session(concurrency)
        provider = create_provider("bench", settings.provider("bench"), session)
        numbers = iter(range(count))

        async def sender() -> None:  # ``concurrency`` of these share the numbers: no task per message
            for i in numbers:
                await provider.send(Message(i, "sms", f"+55118{i:08d}", f"Oi Lead {i}!"))

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        await session.close()

    settle_collector()  # as a worker does
    began = time.process_time()  # after start-up and imports: the sends' own CPU
    run_loop(main())
    results.put((count, time.process_time() - began))


def _raw_ceiling(base_url: str, count: int, processes: int, concurrency: int) -> tuple[float, float]:
    """Messages per minute, and the senders' CPU seconds."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    share = count // processes
    procs = [
        ctx.Process(target=_raw_sender, args=(base_url, share, concurrency, results))
        for _ in range(processes)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    return sum(sent for sent, _ in answers) / elapsed * 60, sum(cpu for _, cpu in answers)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_dispatch_bench(
    settings: Settings,
    endpoints: Endpoints,
    leads: int = 200_000,
    workers: int = 2,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> DispatchBenchResult:
    """Measure the pipeline and the raw ceiling in one run; clean up the benchmark's namespace."""
    from leadctl.local.sandbox.server import SandboxProcess

    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    with SandboxProcess() as sandbox:
        bench = _bench_settings(settings, sandbox.base_url, namespace, concurrency)
        client = open_redis(endpoints.redis_url, bench)
        conn = open_postgres(endpoints.database_url, bench)
        try:
            wal_before, cpu_before = _wal_position(conn), _redis_cpu_s(client)
            _queue_leads(conn, client, namespace, leads, bench.redis.partitions)
            commands_before = _commands_processed(client)
            sandbox_process = psutil.Process(sandbox.pid)
            sandbox_before = _cpu_s(sandbox_process)
            sampler = _WorkerSampler(endpoints.database_url)
            sampler.start()
            reports = Supervisor(bench, endpoints, [PoolSpec("sms", workers, concurrency)], burst=True).run()
            sampler.done.set()
            sampler.join()
            sandbox_cpu_s = _cpu_s(sandbox_process) - sandbox_before
            commands = _commands_processed(client) - commands_before
            redis_cpu_s = _redis_cpu_s(client) - cpu_before
            first, last, sent = conn.execute(
                f'SELECT min(claimed_at), max(finished_at), count(*) FROM "{namespace}".deliveries '
                "WHERE status = 'sent'"
            ).fetchone()
            pipeline_per_min = sent / max((last - first).total_seconds(), 1e-9) * 60 if sent else 0.0
            wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,)).fetchone()
            size = conn.execute(
                "SELECT pg_total_relation_size(%s) + pg_total_relation_size(%s)",
                (f'"{namespace}".leads', f'"{namespace}".deliveries'),
            ).fetchone()
            duplicates = sandbox.stats()["duplicates"]
            masters = _primaries(client)
            sandbox.reset()
            sandbox_before = _cpu_s(sandbox_process)
            raw_per_min, raw_client_cpu_s = _raw_ceiling(sandbox.base_url, leads, workers, concurrency)
            raw_sandbox_cpu_s = _cpu_s(sandbox_process) - sandbox_before
        finally:
            conn.close()
            purge_namespace(client, endpoints.database_url, namespace)
            client.close()
    latencies = reports["sms"].latencies_ms
    return DispatchBenchResult(
        leads=leads,
        workers=workers,
        concurrency=concurrency,
        leads_per_min=pipeline_per_min,
        raw_ceiling_per_min=raw_per_min,
        ratio=pipeline_per_min / raw_per_min if raw_per_min else 0.0,
        latency_p50_ms=_percentile(latencies, 50),
        latency_p99_ms=_percentile(latencies, 99),
        worker_peak_rss_mb=max(sampler.peak.values(), default=0) / 2**20,
        redis_commands_per_lead=commands / leads,
        sent=sent,
        duplicates_at_provider=duplicates,
        cpus=os.cpu_count() or 1,
        redis_masters=masters,
        partitions=bench.redis.partitions,
        redis_cpu_us_per_lead=redis_cpu_s * 1e6 / leads,
        postgres_wal_bytes_per_lead=float(wal[0]) / leads,
        postgres_bytes_per_lead=float(size[0]) / leads,
        worker_cpu_us_per_lead=sum(sampler.cpu.values()) * 1e6 / leads,
        sandbox_cpu_us_per_lead=sandbox_cpu_s * 1e6 / leads,
        postgres_cpu_us_per_lead=sum(sampler.backend_cpu.values()) * 1e6 / leads,
        raw_client_cpu_us_per_lead=raw_client_cpu_s * 1e6 / leads,
        raw_sandbox_cpu_us_per_lead=raw_sandbox_cpu_s * 1e6 / leads,
    )


def bench_dispatch(
    settings: Settings, endpoints: Endpoints, leads: int, workers: int, concurrency: int
) -> tuple[DispatchBenchResult, Path]:
    """`leadctl bench dispatch`: run_dispatch_bench, its result saved for `leadctl plan` (and where)."""
    result = run_dispatch_bench(settings, endpoints, leads, workers, concurrency)
    return result, save_result(result, settings.data_dir)
