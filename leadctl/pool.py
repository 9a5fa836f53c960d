"""The multiprocessing supervisor: N worker processes for one channel, signals, restarts.

Each worker is a spawned process running one asyncio loop (leadctl.dispatch). The supervisor
forwards the first SIGTERM/SIGINT to its workers, which stop reading, finish their in-flight sends
within the grace period and record them; a second signal kills them at once. A worker that dies
unexpectedly is restarted with backoff; its unacknowledged entries are reclaimed by the others
once idle past the visibility timeout.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from leadctl.config import Settings
from leadctl.connections import Endpoints
from leadctl.dispatch import WorkerOptions, WorkerReport, run_worker

log = logging.getLogger("leadctl.pool")

_MAX_RESTARTS = 5
FATAL_EXIT = 3


@dataclass(slots=True)
class PoolReport:
    """What a pool did, summed over its workers."""

    channel: str
    statuses: Counter[str] = field(default_factory=Counter)
    entries: int = 0
    restarts: int = 0
    crashed: int = 0
    seconds: float = 0.0
    fatal: str | None = None

    def add(self, report: WorkerReport) -> None:
        self.statuses.update(report.statuses)
        self.entries += report.entries
        self.fatal = self.fatal or report.fatal


def default_name() -> str:
    return socket.gethostname()


def _worker_main(
    settings_data: dict[str, Any], endpoints: Endpoints, options: WorkerOptions, results: Any
) -> None:
    """Entry point of a worker process."""
    logging.basicConfig(level=logging.WARNING, format=f"leadctl worker[{os.getpid()}]: %(message)s")
    settings = Settings.model_validate(settings_data)

    async def main() -> WorkerReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_worker(settings, endpoints, options, stop)

    report = asyncio.run(main())
    results.put(report)
    if report.fatal:
        sys.exit(FATAL_EXIT)


class Supervisor:
    """Runs ``workers`` processes over one channel until they finish or a signal stops them."""

    def __init__(
        self,
        settings: Settings,
        endpoints: Endpoints,
        channel: str,
        workers: int,
        concurrency: int,
        *,
        burst: bool = False,
        max_leads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.channel = channel
        self.workers = workers
        self.concurrency = concurrency
        self.burst = burst
        self.max_leads = max_leads
        self.name = name or default_name()
        self._ctx = mp.get_context("spawn")
        self._results = self._ctx.Queue()
        self._stopping = False
        self._signals = 0
        self._received = 0

    def _options(self, index: int) -> WorkerOptions:
        share = None
        if self.max_leads is not None:
            share = self.max_leads // self.workers + (1 if index < self.max_leads % self.workers else 0)
        return WorkerOptions(
            channel=self.channel,
            consumer=f"{self.name}:{os.getpid()}:{index}",
            concurrency=self.concurrency,
            burst=self.burst,
            max_leads=share,
        )

    def _spawn(self, index: int, restart: int = 0) -> BaseProcess:
        options = self._options(index)
        if restart:
            options.consumer += f".{restart}"
        process = self._ctx.Process(
            target=_worker_main,
            args=(self.settings.model_dump(by_alias=True), self.endpoints, options, self._results),
            name=f"leadctl-{self.channel}-{index}",
            daemon=False,
        )
        process.start()
        return process

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        self._stopping = True
        if self._signals == 1:
            log.warning("stopping: finishing in-flight sends (signal again to stop at once)")

    def run(self) -> PoolReport:
        """Start the workers and supervise them until all have exited."""
        report = PoolReport(self.channel)
        started = time.monotonic()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        processes = {index: self._spawn(index) for index in range(self.workers)}
        restarts = Counter[int]()
        forwarded = 0
        finished = 0
        try:
            while processes:
                self._collect(report)
                if self._signals > forwarded:
                    forwarded = self._signals
                    sig = signal.SIGTERM if forwarded == 1 else signal.SIGKILL
                    for process in processes.values():
                        if process.pid is not None and process.is_alive():
                            os.kill(process.pid, sig)
                for index, process in list(processes.items()):
                    if process.is_alive():
                        continue
                    process.join()
                    del processes[index]
                    if process.exitcode == 0:
                        finished += 1
                        continue
                    if self._stopping:
                        continue
                    if process.exitcode == FATAL_EXIT:  # e.g. credentials refused: stop them all
                        finished += 1
                        self._stopping = True
                        self._signals = max(self._signals, 1)
                        continue
                    report.crashed += 1
                    if restarts[index] >= _MAX_RESTARTS:
                        log.error(
                            "worker %s exited with code %s too often; not restarting", index, process.exitcode
                        )
                        continue
                    restarts[index] += 1
                    delay = min(2 ** restarts[index] * 0.25, 10.0)
                    log.warning(
                        "worker %s exited with code %s; restarting in %.1fs", index, process.exitcode, delay
                    )
                    time.sleep(delay)
                    processes[index] = self._spawn(index, restarts[index])
                    report.restarts += 1
                time.sleep(0.05)
            self._collect(report, expected=finished)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        report.seconds = time.monotonic() - started
        return report

    def _collect(self, report: PoolReport, expected: int | None = None) -> None:
        """Add the workers' reports that have arrived; with ``expected``, wait for that many in all."""
        while True:
            try:
                if expected is not None and self._received < expected:
                    worker_report = self._results.get(timeout=5)
                else:
                    worker_report = self._results.get_nowait()
            except Exception:  # queue.Empty, or a half-written result of a killed worker
                return
            self._received += 1
            report.add(worker_report)
