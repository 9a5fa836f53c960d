"""Rate-limit benchmark: worker processes sharing one provider's limit through Redis.

    python -m leadctl.bench.ratelimit --rate 200 --processes 8 --duration 30 [--json]

Each process runs ``--concurrency`` send tasks in a loop: wait for a token from leadctl.providers.ratelimit,
then send one SMS over HTTP to a Twilio-compatible sandbox running in its own process (``--no-send``
only takes tokens). Reported: the rate over the run and the busiest one-second sliding window, both
from the instants tokens were granted and from the instants the sandbox accepted the messages; the
wait for a token (p50, p99); Redis round trips per send. Exit 1 when the rate is more than 5% off
the limit or a window holds more than 110% of it.

Redis: ``--redis-url``, else ``$LEADCTL_REDIS_URL``, else redis://127.0.0.1:6379/0. The benchmark
works in a namespace of its own and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from multiprocessing.synchronize import Barrier
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from leadctl.config import ProviderSettings
from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SandboxProcess
from leadctl.providers.base import Message, ProviderError
from leadctl.providers.ratelimit import RateLimiter
from leadctl.providers.registry import create_provider, make_session
from leadctl.queue import keys

PROVIDER = "bench"
MAX_RATE_ERROR = 0.05
MAX_WINDOW = 1.10


def worst_window(times: Sequence[float], width: float = 1.0) -> int:
    """The most instants of ``times`` (sorted) inside any window ``[t, t + width)``."""
    worst, first = 0, 0
    for last, instant in enumerate(times):
        while instant - times[first] >= width:
            first += 1
        worst = max(worst, last - first + 1)
    return worst


def summarize(times: Sequence[float], start: float, duration: float, limit: float) -> dict[str, float]:
    """Rate over ``[start, start + duration)`` and the worst one-second window, absolute and vs the limit."""
    ordered = sorted(times)
    rate = sum(1 for t in ordered if start <= t < start + duration) / duration
    worst = worst_window(ordered)
    return {
        "rate": round(rate, 2),
        "rate_vs_limit": round(rate / limit, 4),
        "worst_window": worst,
        "worst_window_vs_limit": round(worst / limit, 4),
    }


def passed(summary: dict[str, float]) -> bool:
    return (
        abs(summary["rate_vs_limit"] - 1) <= MAX_RATE_ERROR and summary["worst_window_vs_limit"] <= MAX_WINDOW
    )


def _twilio(base_url: str) -> ProviderSettings:
    return ProviderSettings.model_validate(
        {
            "type": "twilio",
            "base_url": base_url,
            "from": "+15005550006",
            "account_sid": SANDBOX_ACCOUNT_SID,
            "auth_token": SANDBOX_AUTH_TOKEN,
        }
    )


async def _work(
    index: int,
    redis_url: str,
    namespace: str,
    limit: dict[str, Any],
    options: dict[str, Any],
    barrier: Barrier,
) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    limiter = RateLimiter(client, namespace, PROVIDER, rate=limit["rate"], burst=limit["burst"])
    base_url = options["base_url"]
    session = make_session(options["concurrency"]) if base_url else None
    provider = create_provider(PROVIDER, _twilio(base_url), session) if session else None
    grants: list[float] = []
    waits: list[float] = []
    errors = 0
    barrier.wait()
    end = time.time() + options["duration"]

    async def sender(task: int) -> None:
        nonlocal errors
        sent = 0
        while time.time() < end:
            began = time.monotonic()
            await limiter.acquire()
            grants.append(time.time())
            waits.append(time.monotonic() - began)
            if provider is not None:
                to = f"+55{index:02d}{task:04d}{sent:06d}"
                try:
                    await provider.send(Message(sent, "sms", to, "benchmark"))
                except ProviderError:
                    errors += 1
            sent += 1

    try:
        await asyncio.gather(*(sender(task) for task in range(options["concurrency"])))
    finally:
        if session is not None:
            await session.close()
        await client.aclose()
    return {
        "grants": grants,
        "waits": waits,
        "reservations": limiter.reservations,
        "discarded": limiter.discarded,
        "errors": errors,
    }


def _process(
    index: int,
    redis_url: str,
    namespace: str,
    limit: dict[str, Any],
    options: dict[str, Any],
    barrier: Barrier,
    results: Any,
) -> None:
    results.put(asyncio.run(_work(index, redis_url, namespace, limit, options, barrier)))


def run(
    redis_url: str,
    *,
    rate: float = 200,
    processes: int = 8,
    duration: float = 30,
    concurrency: int = 50,
    burst: int | None = None,
    base_url: str | None = None,
) -> dict[str, Any]:
    """Run the processes and measure the tokens they were granted (see module doc)."""
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    limit = {"rate": rate, "burst": burst}
    options = {"duration": duration, "concurrency": concurrency, "base_url": base_url}
    workers = [
        context.Process(target=_process, args=(i, redis_url, namespace, limit, options, barrier, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=120)
        start = time.time()
        outputs = [results.get(timeout=duration + 120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
        client = redis.Redis.from_url(redis_url)
        stale = list(client.scan_iter(match=keys.namespace_pattern(namespace)))
        if stale:
            client.delete(*stale)
        client.close()
    grants = [t for output in outputs for t in output["grants"]]
    waits = sorted(w for output in outputs for w in output["waits"])
    return {
        "limit": rate,
        "processes": processes,
        "concurrency": concurrency,
        "duration_s": duration,
        "start": start,
        "sends": len(grants),
        "errors": sum(output["errors"] for output in outputs),
        "granted": summarize(grants, start, duration, rate),
        "wait_p50_ms": round(statistics.median(waits) * 1000, 1),
        "wait_p99_ms": round(waits[int(len(waits) * 0.99)] * 1000, 1),
        "round_trips_per_send": round(sum(o["reservations"] for o in outputs) / max(len(grants), 1), 3),
        "late_tokens_dropped": sum(o["discarded"] for o in outputs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leadctl.bench.ratelimit", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rate", type=float, default=200.0, help="the provider's limit, messages/s")
    parser.add_argument("--burst", type=int, default=None, help="default: a twentieth of a second's worth")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=50, help="send tasks per process")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the sandbox's median latency")
    parser.add_argument("--no-send", action="store_true", help="take tokens only, no HTTP")
    parser.add_argument(
        "--redis-url", default=os.environ.get("LEADCTL_REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    common = {
        "rate": args.rate,
        "processes": args.processes,
        "duration": args.duration,
        "concurrency": args.concurrency,
        "burst": args.burst,
    }
    if args.no_send:
        report = run(args.redis_url, **common)
        checks = [report["granted"]]
    else:
        with SandboxProcess(latency_ms=args.latency_ms) as sandbox:
            report = run(args.redis_url, base_url=sandbox.base_url, **common)
            accepted = [message["time"] for message in sandbox.messages()]
        report["accepted"] = summarize(accepted, report["start"], args.duration, args.rate)
        checks = [report["granted"], report["accepted"]]
    report["ok"] = all(passed(summary) for summary in checks)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        for name in ("granted", "accepted"):
            if name in report:
                s = report[name]
                print(
                    f"{name:>8}: {s['rate']:.1f}/s ({s['rate_vs_limit']:.1%} of {args.rate:g}/s), "
                    f"worst 1 s window {s['worst_window']} ({s['worst_window_vs_limit']:.1%})"
                )
        print(
            f"{report['sends']} sends by {args.processes} processes x {args.concurrency} tasks in "
            f"{args.duration:g} s, {report['errors']} errors; wait for a token "
            f"p50 {report['wait_p50_ms']} ms, p99 {report['wait_p99_ms']} ms; "
            f"{report['round_trips_per_send']} Redis round trips per send, "
            f"{report['late_tokens_dropped']} late tokens dropped; " + ("PASS" if report["ok"] else "FAIL")
        )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
