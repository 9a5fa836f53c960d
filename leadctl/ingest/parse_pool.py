"""Parse processes (the parse pool): batches of raw records parsed elsewhere, results back in input order.

Parsing (phone and email validation) is most of ingest's Python work, so it runs in parse
processes while this one reads the file and writes to PostgreSQL and Redis. Workers come from a
forkserver that has already imported the parser (no copy of this process's connections or threads),
ignore Ctrl-C (this process stops them) and are started only for inputs big enough to repay their
start (about 0.3 s).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from leadctl.errors import InputError, LeadctlError
from leadctl.ingest.batches import ParsedBatch, parse_batch

Batch = tuple[Any, ...]
"""The arguments of batches.parse_batch."""


def default_parsers() -> int:
    """One parse process per CPU this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ParsePool:
    """Parses batches with ``parsers`` processes, ``parsers + 1`` batches in flight at most (every
    parser busy and one batch ready; more only held memory); with 0 parsers, or until the pool is
    started, in this process."""

    def __init__(self, parsers: int) -> None:
        self.parsers = parsers
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the parse processes now (they warm up while this process does other work)."""
        if self.parsers and self._executor is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["leadctl.ingest.batches"])
            self._executor = ProcessPoolExecutor(
                self.parsers, mp_context=context, initializer=_ignore_interrupts
            )

    def map(self, batches: Iterable[Batch], inline: int) -> Iterator[ParsedBatch]:
        """Each batch's ParsedBatch, in order. The first ``inline`` batches are parsed in this
        process unless the pool already runs. When ``batches`` raises InputError (the input stopped
        being readable), the batches read before it are finished and yielded, then it is raised."""
        pending: deque[Future[ParsedBatch]] = deque()
        try:
            for count, batch in enumerate(batches, 1):
                if self._executor is None and count > inline:
                    self.start()
                if self._executor is None:
                    yield parse_batch(*batch)
                    continue
                pending.append(self._executor.submit(parse_batch, *batch))
                if len(pending) > self.parsers + 1:
                    yield _result(pending.popleft())
        except InputError:
            while pending:
                yield _result(pending.popleft())
            raise
        while pending:
            yield _result(pending.popleft())

    def close(self) -> None:
        """Stop the parse processes, dropping batches not started."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _result(future: Future[ParsedBatch]) -> ParsedBatch:
    try:
        return future.result()
    except BrokenProcessPool:
        raise LeadctlError("a parse process died (out of memory?); try --parsers 0") from None
