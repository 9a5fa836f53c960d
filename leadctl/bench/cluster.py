"""Dispatch throughput on a 3-master Redis Cluster (a replica each) against a single Redis, in one
run, and how it changes with the number of stream partitions.

Both Redis setups are private to the run (local redis-server processes on spare ports, no
persistence), so nothing else's traffic counts; PostgreSQL is the configured one (or the embedded
one). Each variant is `leadctl bench dispatch` (leadctl.bench.dispatch): N leads queued, drained by
`work --burst`, then the raw HTTP ceiling. On one machine every Redis process shares the same cores
as the workers, so this measures what the cluster and partitions cost, not what more machines buy.

Usage: python leadctl/bench/cluster.py [--leads N] [--workers W] [--concurrency C] [--partitions 1,4,16]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis

from leadctl.bench.dispatch import run_dispatch_bench
from leadctl.config import Settings, load_settings
from leadctl.connections import Endpoints
from leadctl.local.cluster import LocalCluster, find_redis_server, free_ports
from leadctl.local.services import resolve_endpoints
from leadctl.ops.measured import DispatchBenchResult

FIGURES = (
    "leads_per_min",
    "raw_ceiling_per_min",
    "ratio",
    "latency_p99_ms",
    "redis_commands_per_lead",
    "redis_cpu_us_per_lead",
)


def _single_redis(binary: str) -> tuple[subprocess.Popen[bytes], str]:
    """A plain redis-server configured like the cluster's nodes (no persistence)."""
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def _variant(settings: Settings, url: str, cluster: bool, partitions: int) -> Settings:
    data = settings.model_dump(by_alias=True)
    data["redis"].update(url=url, cluster=cluster, partitions=partitions, nodes=[])
    return Settings.model_validate(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--partitions", default="1,4,16", help="partition counts to try on the cluster")
    args = parser.parse_args()
    binary = find_redis_server()
    if binary is None:
        sys.exit("redis-server is not installed")
    settings = load_settings()
    database_url = resolve_endpoints(settings, lambda line: print(line, file=sys.stderr)).database_url
    runs: list[tuple[str, DispatchBenchResult]] = []
    with tempfile.TemporaryDirectory(prefix="leadctl-cluster-bench-") as tmp:
        single, single_url = _single_redis(binary)
        try:
            with LocalCluster(Path(tmp) / "cluster", binary=binary) as cluster:
                variants = [("single Redis, 1 stream", single_url, False, 1)] + [
                    (f"cluster 3 masters, {p} partitions", cluster.url, True, p)
                    for p in (int(x) for x in args.partitions.split(","))
                ]
                for label, url, is_cluster, partitions in variants:
                    print(f"{label}...", file=sys.stderr, flush=True)
                    result = run_dispatch_bench(
                        _variant(settings, url, is_cluster, partitions),
                        Endpoints(url, database_url),
                        args.leads,
                        args.workers,
                        args.concurrency,
                    )
                    runs.append((label, result))
        finally:
            single.send_signal(signal.SIGKILL)
            single.wait()
    for label, result in runs:
        print(
            f"{label:<34}" + "  ".join(f"{name} {getattr(result, name):,.1f}" for name in FIGURES),
            file=sys.stderr,
        )
    report = {label: result.as_json() for label, result in runs}
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
