"""The multiprocessing supervisor: worker processes for one or more channels, signals, restarts.

Each worker is a spawned process running one asyncio loop (leadctl.send.worker). The first
SIGTERM/SIGINT (or the deadline of a batch run) is forwarded to the workers, which stop reading,
finish their in-flight sends within the grace period and record them; a second signal kills them
at once. A worker that dies unexpectedly is restarted with backoff; its unacknowledged entries are
reclaimed by the others once idle past the visibility timeout.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres, open_redis
from leadctl.errors import DependencyError
from leadctl.queue import streams
from leadctl.queue.sifting import CampaignFilter, campaign_filter
from leadctl.records import Status
from leadctl.retry import RESTARTS
from leadctl.send.eventloop import run_loop, settle_collector, stop_on_signals
from leadctl.send.worker import WorkerOptions, WorkerReport, run_worker

log = logging.getLogger("leadctl.send.supervisor")
MAX_RESTARTS = 5
FATAL_EXIT = 3
"""A worker's exit code when continuing is pointless (credentials refused): the pool stops."""


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """``workers`` processes for ``channel``, each with ``concurrency`` sends in flight; with
    ``campaigns``, sending only those campaigns' leads."""

    channel: str
    workers: int
    concurrency: int
    max_leads: int | None = None
    campaigns: CampaignFilter | None = None


@dataclass(slots=True)
class PoolReport:
    """What one channel's workers did, summed."""

    channel: str
    workers: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    entries: int = 0
    restarts: int = 0
    crashed: int = 0
    seconds: float = 0.0
    fatal: str | None = None
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, report: WorkerReport) -> None:
        self.statuses.update(report.statuses)
        self.entries += report.entries
        self.fatal = self.fatal or report.fatal
        self.latencies_ms.extend(report.latencies_ms)

    @property
    def unsent(self) -> int:
        return sum(self.statuses.get(status, 0) for status in (Status.FAILED, Status.DEAD, Status.IN_DOUBT))


def default_name() -> str:
    return socket.gethostname()


def _worker_main(
    settings_data: dict[str, Any], endpoints: Endpoints, options: WorkerOptions, results: Any
) -> None:
    """Entry point of a worker process."""
    logging.basicConfig(level=logging.WARNING, format=f"leadctl worker[{os.getpid()}]: %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # the worker reports outages itself
    settings = Settings.model_validate(settings_data)
    settle_collector()

    async def main() -> WorkerReport:
        return await run_worker(settings, endpoints, options, stop_on_signals())

    report = run_loop(main())
    results.put(report)
    if report.fatal:
        sys.exit(FATAL_EXIT)


@dataclass(slots=True)
class _Slot:
    """One worker position of a pool, and how often it was restarted."""

    spec: PoolSpec
    index: int
    process: BaseProcess
    restarts: int = 0


class Supervisor:
    """Runs the pools until their workers finish, a signal stops them, or the deadline passes.

    burst: workers exit once their channel's stream and pending list are empty.
    deadline_s: seconds after which the workers are told to stop (what is left stays queued).
    name: this host's name in consumer names and heartbeats.
    tick: called about every 50 ms while supervising (a batch run renews its lock there).
    """

    def __init__(
        self,
        settings: Settings,
        endpoints: Endpoints,
        pools: list[PoolSpec],
        *,
        burst: bool = False,
        deadline_s: float | None = None,
        name: str | None = None,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.pools = pools
        self.burst = burst
        self.deadline_s = deadline_s
        self.name = name or default_name()
        self.tick = tick
        self._ctx = mp.get_context("spawn")
        self._results = self._ctx.Queue()
        self._settings_data = settings.model_dump(by_alias=True)
        self._signals = 0
        self._received = 0

    def _options(self, spec: PoolSpec, index: int, restart: int) -> WorkerOptions:
        share = None
        if spec.max_leads is not None:
            share = spec.max_leads // spec.workers + (1 if index < spec.max_leads % spec.workers else 0)
        suffix = f".{restart}" if restart else ""
        return WorkerOptions(
            channel=spec.channel,
            consumer=f"{self.name}:{os.getpid()}:{spec.channel}:{index}{suffix}",
            concurrency=spec.concurrency,
            burst=self.burst,
            max_leads=share,
            campaigns=spec.campaigns,
        )

    def _spawn(self, spec: PoolSpec, index: int, restart: int = 0) -> BaseProcess:
        process = self._ctx.Process(
            target=_worker_main,
            args=(self._settings_data, self.endpoints, self._options(spec, index, restart), self._results),
            name=f"leadctl-{spec.channel}-{index}",
        )
        process.start()
        return process

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("stopping: finishing in-flight sends (signal again to stop at once)")

    def stop(self) -> None:
        """Ask the workers to finish what they are doing and exit (as the first signal does)."""
        self._signals = max(self._signals, 1)

    def run(self) -> dict[str, PoolReport]:
        """Start every pool and supervise until all workers have exited; one report per channel."""
        reports = {spec.channel: PoolReport(spec.channel, spec.workers) for spec in self.pools}
        started = time.monotonic()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        slots = [_Slot(spec, i, self._spawn(spec, i)) for spec in self.pools for i in range(spec.workers)]
        forwarded = finished = 0
        try:
            while slots:
                self._collect(reports)
                if self.tick is not None:
                    self.tick()
                if self.deadline_s is not None and time.monotonic() - started >= self.deadline_s:
                    self.stop()
                if self._signals > forwarded:
                    forwarded = self._signals
                    self._forward(slots, signal.SIGTERM if forwarded == 1 else signal.SIGKILL)
                for slot in list(slots):
                    if slot.process.is_alive():
                        continue
                    slot.process.join()
                    code = slot.process.exitcode
                    if code in (0, FATAL_EXIT):
                        finished += 1
                    if code == FATAL_EXIT:  # e.g. credentials refused: stop them all
                        self.stop()
                    if code in (0, FATAL_EXIT) or self._signals:
                        slots.remove(slot)
                        continue
                    self._restart(slot, reports[slot.spec.channel], slots)
                time.sleep(0.05)
            self._collect(reports, expected=finished)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        elapsed = time.monotonic() - started
        for report in reports.values():
            report.seconds = elapsed
        return reports

    def _forward(self, slots: list[_Slot], sig: signal.Signals) -> None:
        for slot in slots:
            if slot.process.pid is not None and slot.process.is_alive():
                os.kill(slot.process.pid, sig)

    def _restart(self, slot: _Slot, report: PoolReport, slots: list[_Slot]) -> None:
        report.crashed += 1
        name = f"{slot.spec.channel} worker {slot.index}"
        if slot.restarts >= MAX_RESTARTS:
            log.error("%s exited with code %s too often; not restarting it", name, slot.process.exitcode)
            slots.remove(slot)
            return
        slot.restarts += 1
        delay = RESTARTS.delay(slot.restarts)
        log.warning("%s exited with code %s; restarting in %.1fs", name, slot.process.exitcode, delay)
        time.sleep(delay)
        slot.process = self._spawn(slot.spec, slot.index, slot.restarts)
        report.restarts += 1

    def _collect(self, reports: dict[str, PoolReport], expected: int | None = None) -> None:
        """Add the workers' reports that have arrived; with ``expected``, wait for that many in all."""
        while True:
            try:
                if expected is not None and self._received < expected:
                    worker_report = self._results.get(timeout=5)
                else:
                    worker_report = self._results.get_nowait()
            except queue.Empty:
                return
            self._received += 1
            reports[worker_report.channel].add(worker_report)


@dataclass(frozen=True, slots=True)
class WorkSpec:
    """What `leadctl work` runs: ``workers`` processes per channel with ``concurrency`` sends in
    flight each (None: the channel's config); ``burst``: exit once the queues are empty;
    ``max_leads``: stop after that many leads per channel; ``campaigns``: send only their leads (a
    filtered worker goes through the queue once, so this needs ``burst``); ``name``: this host's."""

    channels: Sequence[str]
    workers: int | None = None
    concurrency: int | None = None
    burst: bool = False
    max_leads: int | None = None
    campaigns: Sequence[str] = ()
    name: str | None = None


@dataclass(frozen=True, slots=True)
class WorkReport:
    """What the workers of each channel did."""

    channels: dict[str, PoolReport]

    @property
    def statuses(self) -> Counter[str]:
        return sum((r.statuses for r in self.channels.values()), start=Counter())

    @property
    def failed(self) -> bool:
        """Some leads were not sent, or a worker crashed."""
        return any(r.unsent or r.crashed for r in self.channels.values())

    def as_json(self) -> dict[str, object]:
        return {
            "statuses": dict(self.statuses),
            "channels": {
                ch: {
                    "statuses": dict(r.statuses),
                    "entries": r.entries,
                    "seconds": round(r.seconds, 3),
                    "leads_per_min": round(r.entries / r.seconds * 60) if r.seconds else 0,
                    "restarts": r.restarts,
                }
                for ch, r in self.channels.items()
            },
        }


def check_dependencies(settings: Settings, endpoints: Endpoints, channels: Sequence[str]) -> None:
    """Redis and PostgreSQL answer, and the channels' queues have this host's partition count: a
    DependencyError or ConfigError here, before any worker starts."""
    client = open_redis(endpoints.redis_url, settings)
    try:
        streams.check_partitions(client, settings.namespace, channels, settings.redis.partitions)
    finally:
        client.close()
    open_postgres(endpoints.database_url, settings).close()


def _campaign_filters(
    settings: Settings, endpoints: Endpoints, channels: Sequence[str], campaigns: Sequence[str]
) -> dict[str, CampaignFilter]:
    """Each channel's campaign filter, its horizon noted now (none without campaigns)."""
    if not campaigns:
        return {}
    client = open_redis(endpoints.redis_url, settings)
    try:
        return {
            ch: campaign_filter(client, settings.namespace, ch, settings.redis.partitions, campaigns)
            for ch in channels
        }
    finally:
        client.close()


def run_workers(
    settings: Settings, endpoints: Endpoints, spec: WorkSpec, say: Callable[[str], None]
) -> WorkReport:
    """`leadctl work`: check the dependencies, start each channel's workers (``say`` tells how many)
    and supervise them until they finish or a signal stops them. A DependencyError when a worker
    found continuing pointless (credentials refused)."""
    check_dependencies(settings, endpoints, spec.channels)
    filters = _campaign_filters(settings, endpoints, spec.channels, spec.campaigns)
    pools = [
        PoolSpec(
            ch,
            spec.workers or settings.channel(ch).workers,
            spec.concurrency or settings.channel(ch).concurrency,
            spec.max_leads,
            filters.get(ch),
        )
        for ch in spec.channels
    ]
    for pool in pools:
        say(f"{pool.channel}: {pool.workers} workers x {pool.concurrency} in flight")
    reports = Supervisor(settings, endpoints, pools, burst=spec.burst, name=spec.name).run()
    for report in reports.values():
        if report.fatal:
            raise DependencyError(f"{report.channel}: {report.fatal}")
    return WorkReport(reports)
