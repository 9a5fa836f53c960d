"""The storing half of ingest: lead files read here, parsed in parse processes, recorded in
PostgreSQL by writer threads, queued in Redis.

    read (this thread) -> parse (parse_pool.ParsePool: COPY text per writer, rejects)
      -> writer threads: COPY + one de-duplicating INSERT (store.leads), commit, then XADD the new
         ids in one Lua call per channel (streams.enqueue_ids)

Each writer thread has its own PostgreSQL connection. A lead goes to the writer chosen by a hash of
its contact, so every row of one contact goes through one writer in file order (the first row
wins) and writers never wait on each other's rows. Outcomes are counted in this thread, in order.

A crash between a commit and its XADD leaves leads ``queued`` in PostgreSQL and missing from Redis.
When the input stops being usable half-way (a truncated .gz, an I/O error, bytes that are not
the --encoding given) or PostgreSQL or Redis fails, ingest stops: the rows read before that point
are recorded and queued, and IngestStopped carries the report of them. Ingesting the file again is
safe: rows already recorded count as duplicates.

``ingest_files`` is `leadctl ingest`: it connects, checks the queues' partitions and runs an Ingestor.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import psycopg
import redis

from leadctl.config import CHANNELS, Settings
from leadctl.connections import (
    Endpoints,
    RedisClient,
    open_postgres,
    open_redis,
    postgres_unreachable,
    redis_unreachable,
)
from leadctl.errors import DependencyError, InputError, LeadctlError, UsageError
from leadctl.ingest.batches import ParsedBatch
from leadctl.ingest.distinct import DistinctCounter
from leadctl.ingest.parse import LeadFile, ParseOptions, open_leads
from leadctl.ingest.parse_pool import ParsePool, default_parsers
from leadctl.ingest.readers import Chunk, Item
from leadctl.ingest.rejects import RejectsWriter
from leadctl.queue import streams
from leadctl.store.leads import LeadWriter, Recorded

INLINE_ROWS = 20_000
"""Rows of an input of unknown size parsed in this process before the parse processes are started."""
PARALLEL_BYTES = 4 << 20
"""Inputs at least this big (on disk) start the parse processes at once."""
WRITERS = 2
"""PostgreSQL connections (writer threads) of one ingest: enough to keep PostgreSQL busy on 2 cores."""


@dataclass(slots=True)
class Tally:
    """Rows accounted for: rows = accepted + rejected + duplicates + suppressed."""

    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    suppressed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        for name in ("rows", "accepted", "rejected", "duplicates", "suppressed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.flags.update(other.flags)
        self.channels.update(other.channels)

    def counts(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "reasons": dict(self.reasons),
        }


@dataclass(slots=True)
class FileReport(Tally):
    """One input's tally, and where its rejected rows went (None: it had none, or a dry run)."""

    source: str = ""
    rejects_file: str | None = None


@dataclass(slots=True)
class Timings:
    """Where the time went: parse CPU (all parse processes), and writer threads' waits on each server."""

    parse_cpu_s: float = 0.0
    postgres_s: float = 0.0
    redis_s: float = 0.0


@dataclass(slots=True)
class IngestReport:
    """Every input row accounted for, per file and in total."""

    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    timings: Timings = field(default_factory=Timings)

    @property
    def total(self) -> Tally:
        total = Tally()
        for report in self.files:
            total.add(report)
        return total

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def suppressed(self) -> int:
        return sum(f.suppressed for f in self.files)

    @property
    def channels(self) -> Counter[str]:
        return self.total.channels

    @property
    def rejects_files(self) -> list[str]:
        return [f.rejects_file for f in self.files if f.rejects_file]

    def as_json(self) -> dict[str, object]:
        total = self.total
        rejects_files = self.rejects_files
        return {
            **total.counts(),
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(total.rows / self.seconds) if self.seconds > 0 else 0,
            "rejects_file": rejects_files[0] if len(rejects_files) == 1 else None,
            "rejects_files": rejects_files,
            "flags": dict(total.flags),
            "channels": dict(total.channels),
            "dry_run": self.dry_run,
            "files": [{"source": f.source, **f.counts(), "rejects_file": f.rejects_file} for f in self.files],
            "timings": {f.name: round(getattr(self.timings, f.name), 3) for f in fields(self.timings)},
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the current input is: rows parsed, bytes read of ``size`` (None: unknown)."""

    source: str
    rows: int
    done: int | None
    size: int | None


class IngestStopped(LeadctlError):
    """Ingest stopped part-way because of ``cause``; ``report`` counts what was done before it."""

    def __init__(self, cause: BaseException, report: IngestReport) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.report = report


def default_rejects_path(source: str) -> Path:
    """``leads.csv`` -> ``leads.csv.rejects.csv`` beside it; stdin -> ``stdin.rejects.csv`` here."""
    if source == "-":
        return Path("stdin.rejects.csv")
    return Path(f"{source}.rejects.csv")


def rejects_paths(sources: Sequence[str], rejects: Path | None, dry_run: bool) -> list[Path | None]:
    """Where each source's rejected rows go: ``rejects`` (a file for one source, else a directory),
    else beside each input; a dry run writes them only to an explicit ``rejects``."""
    if rejects is None:
        return [None if dry_run else default_rejects_path(s) for s in sources]
    if rejects.is_dir():
        return [rejects / default_rejects_path(s).name for s in sources]
    if len(sources) > 1:
        raise UsageError(f"--rejects {rejects}: with several inputs give a directory (or leave it out)")
    return [rejects]


def check_inputs(sources: Sequence[str], rejects: Sequence[Path | None]) -> None:
    """Refuse, before anything is written, inputs that are missing and rejects files in the way."""
    if not sources:
        raise UsageError("no input file given ('-' reads stdin)")
    if list(sources).count("-") > 1:
        raise UsageError("stdin ('-') can be read only once")
    targets = [path.resolve() for path in rejects if path is not None]
    if len(set(targets)) < len(targets):
        raise UsageError("two inputs would share a rejects file (same name?); ingest them separately")
    for source, path in zip(sources, rejects, strict=True):
        if source != "-":
            if not Path(source).exists():
                raise InputError(f"{source}: no such file")
            if path is not None and path.exists() and path.samefile(source):
                raise UsageError(f"{source}: the rejects file would overwrite the input; give --rejects")
        if path is not None and not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            raise UsageError(f"cannot write the rejects file {path}; give a writable --rejects PATH")


@dataclass(frozen=True, slots=True)
class _Written:
    recorded: list[Recorded]
    postgres_s: float
    redis_s: float


class _Writers:
    """One thread per PostgreSQL connection, each recording its share of the leads and queueing the
    new ones; outcomes are counted in the calling thread, in submission order."""

    def __init__(
        self,
        conns: Sequence[psycopg.Connection],
        client: redis.Redis,
        namespace: str,
        timings: Timings,
        partitions: int,
    ) -> None:
        self.conns = conns
        self.client = client
        self.namespace = namespace
        self.timings = timings
        self.partitions = partitions
        self.writer = LeadWriter(namespace)
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix="leadctl-writer") for _ in conns]
        self._pending: deque[tuple[Future[_Written], int, Tally]] = deque()
        self._groups: set[str] = set()

    def submit(self, part: int, data: str, leads: int, source: str, tally: Tally) -> None:
        """Record ``leads`` leads (COPY text ``data``) with writer ``part``; count them into ``tally``."""
        future = self._threads[part].submit(self._write, self.conns[part], data, source)
        self._pending.append((future, leads, tally))
        while len(self._pending) > 2 * len(self.conns):
            self._count(*self._pending.popleft())

    def drain(self) -> None:
        """Wait for every submitted write and count it; the first failure is raised."""
        while self._pending:
            self._count(*self._pending.popleft())

    def settle(self) -> None:
        """After a failure: wait for the writes still running and count those that were committed."""
        wait([future for future, _, _ in self._pending])
        for future, leads, tally in self._pending:
            if future.exception() is None:
                self._count(future, leads, tally)
        self._pending.clear()

    def close(self) -> None:
        for thread in self._threads:
            thread.shutdown(wait=True, cancel_futures=True)

    def _write(self, conn: psycopg.Connection, data: str, source: str) -> _Written:
        started = time.perf_counter()
        recorded = self.writer.record_copy(conn, data, source)
        committed = time.perf_counter()
        for new in recorded:
            if new.to_queue:
                if new.channel not in self._groups:
                    streams.ensure_group(self.client, self.namespace, new.channel, self.partitions)
                    self._groups.add(new.channel)
                streams.enqueue_ids(self.client, self.namespace, new.channel, new.to_queue, self.partitions)
        return _Written(recorded, committed - started, time.perf_counter() - committed)

    def _count(self, future: Future[_Written], leads: int, tally: Tally) -> None:
        written = future.result()
        recorded = written.recorded
        self.timings.postgres_s += written.postgres_s
        self.timings.redis_s += written.redis_s
        new = sum(r.new for r in recorded)
        suppressed = sum(r.suppressed for r in recorded)
        tally.rows += leads
        tally.duplicates += leads - new
        tally.suppressed += suppressed
        tally.accepted += new - suppressed
        tally.channels.update({r.channel: r.new - r.suppressed for r in recorded})


class Ingestor:
    """Ingests lead files into one namespace.

    ``conn``: one PostgreSQL connection, or several (one writer thread each; two keep PostgreSQL
    busy on two cores). ``batch_size``: rows per parse batch. ``dry_run``: validate and count
    (in-file duplicates included) without writing; needs no connection. ``parsers``: parse
    processes (0: parse in this process), started only for big inputs. ``partitions``: streams per
    channel (``redis.partitions``).
    """

    def __init__(
        self,
        namespace: str,
        conn: psycopg.Connection | Sequence[psycopg.Connection] | None,
        redis_client: redis.Redis | None,
        batch_size: int,
        *,
        dry_run: bool = False,
        parsers: int = 0,
        partitions: int = 1,
    ) -> None:
        self.namespace = namespace
        self.partitions = partitions
        self.conns = [] if conn is None else [conn] if isinstance(conn, psycopg.Connection) else list(conn)
        self.redis = redis_client
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.parsers = parsers
        if not dry_run and (not self.conns or redis_client is None):
            raise ValueError("a real ingest needs a PostgreSQL connection and a Redis client")

    def ingest(
        self,
        sources: Sequence[str],
        options: ParseOptions,
        config_columns: dict[str, str],
        rejects_path: Path | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> IngestReport:
        """Parse, store and queue every source in turn; return the reconciled counts.

        Raises UsageError/InputError before writing anything when an option or an input is unusable
        from the start, and IngestStopped (with the report so far) when a failure stops it later.
        """
        targets = rejects_paths(sources, rejects_path, self.dry_run)
        check_inputs(sources, targets)
        report = IngestReport(dry_run=self.dry_run)
        started = time.perf_counter()
        pool = ParsePool(self.parsers)
        writers = None
        if not self.dry_run:
            assert self.redis is not None
            writers = _Writers(self.conns, self.redis, self.namespace, report.timings, self.partitions)
        distinct = DistinctCounter() if self.dry_run else None
        try:
            for source, target in zip(sources, targets, strict=True):
                lead_file = open_leads(source, options, config_columns)
                tally = FileReport(source=lead_file.source.name)
                report.files.append(tally)
                self._ingest_file(lead_file, tally, target, pool, writers, distinct, report.timings, progress)
        except (LeadctlError, psycopg.Error, redis.RedisError, OSError) as exc:
            if writers is not None:
                writers.settle()
            report.seconds = time.perf_counter() - started
            raise IngestStopped(exc, report) from exc
        finally:
            pool.close()
            if writers is not None:
                writers.close()
        report.seconds = time.perf_counter() - started
        return report

    def _ingest_file(
        self,
        lead_file: LeadFile,
        tally: FileReport,
        target: Path | None,
        pool: ParsePool,
        writers: _Writers | None,
        distinct: DistinctCounter | None,
        timings: Timings,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        source = lead_file.source
        if source.size is not None and source.size >= PARALLEL_BYTES:
            pool.start()
        if target is not None:
            target.unlink(missing_ok=True)  # this run's rejects only
        parts = len(writers.conns) if writers is not None else 0
        batches = (
            (lead_file.parser, items, lead_file.format, parts, distinct is not None)
            for items in _batches(lead_file.records(), self.batch_size)
        )
        before = distinct.count() if distinct is not None else 0
        parsed_rows = 0
        with RejectsWriter(target or os.devnull, lead_file.columns) as rejects:
            try:
                for parsed in pool.map(batches, INLINE_ROWS // self.batch_size):
                    timings.parse_cpu_s += parsed.cpu_s
                    self._take(parsed, tally, rejects, writers, distinct, source.name)
                    parsed_rows += parsed.rows
                    if progress is not None:
                        done = source.position() if source.position is not None else None
                        progress(Progress(source.name, parsed_rows, done, source.size))
                if writers is not None:
                    writers.drain()
            finally:
                lead_file.close()
                if target is not None and rejects.count:
                    tally.rejects_file = str(target)
        if distinct is not None:
            new = distinct.count() - before
            tally.duplicates += tally.accepted - new
            tally.accepted = new

    @staticmethod
    def _take(
        parsed: ParsedBatch,
        tally: Tally,
        rejects: RejectsWriter,
        writers: _Writers | None,
        distinct: DistinctCounter | None,
        source: str,
    ) -> None:
        """Count one parsed batch: its rejects now, its leads once written (or, dry, as keys)."""
        tally.rows += len(parsed.rejects)
        tally.rejected += len(parsed.rejects)
        for reject in parsed.rejects:
            tally.reasons[reject.code] += 1
            rejects.write(reject)
        tally.flags.update(parsed.flags)
        if distinct is not None:
            distinct.add(parsed.keys)
            tally.rows += parsed.accepted
            tally.accepted += parsed.accepted
        elif writers is not None:
            for part, (data, leads) in enumerate(zip(parsed.parts, parsed.leads, strict=True)):
                if leads:
                    writers.submit(part, data, leads, source, tally)


def _batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Lists of items holding about ``size`` rows; on InputError the items read before it come first."""
    batch: list[Item] = []
    rows = 0
    try:
        for item in items:
            batch.append(item)
            rows += item.lines if isinstance(item, Chunk) else 1
            if rows >= size:
                yield batch
                batch, rows = [], 0
    except InputError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def ingest_files(
    settings: Settings,
    endpoints: Endpoints | None,
    sources: Sequence[str],
    options: ParseOptions,
    *,
    rejects: Path | None = None,
    parsers: int | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> IngestReport:
    """`leadctl ingest`: parse, record and queue ``sources`` into the namespace of ``settings``.

    ``endpoints`` None is a dry run: validate and count, connect to nothing, write nothing (rejects
    only to an explicit ``rejects``). ``options`` get the region and consent rules of ``settings``.
    ``parsers``: parse processes (default: one per CPU). The queues must have this host's partition
    count (else a ConfigError before anything is written). When a failure stops ingest part-way,
    IngestStopped carries the report so far and, as its cause, the one-line error to show.
    """
    options = replace(options, region=settings.default_region, consent=settings.compliance.consent())
    client: RedisClient | None = None
    conns: list[psycopg.Connection] = []
    try:
        if endpoints is not None:
            client = open_redis(endpoints.redis_url, settings)
            streams.check_partitions(client, settings.namespace, CHANNELS, settings.redis.partitions)
            for _ in range(WRITERS):
                conns.append(open_postgres(endpoints.database_url, settings))
        ingestor = Ingestor(
            settings.namespace,
            conns,
            client,
            settings.ingest.batch_size,
            dry_run=endpoints is None,
            parsers=default_parsers() if parsers is None else parsers,
            partitions=settings.redis.partitions,
        )
        try:
            return ingestor.ingest(sources, options, settings.ingest.columns, rejects, progress)
        except IngestStopped as stopped:
            raise IngestStopped(_one_line(stopped, endpoints), stopped.report) from stopped.cause
    finally:
        for conn in conns:
            conn.close()
        if client is not None:
            client.close()


def _one_line(stopped: IngestStopped, endpoints: Endpoints | None) -> LeadctlError:
    """The error that stopped ingest, as the one line (and exit code) the user sees."""
    cause, report = stopped.cause, stopped.report
    error: LeadctlError
    if isinstance(cause, LeadctlError):
        error = cause
    elif isinstance(cause, redis.RedisError) and endpoints is not None:
        error = redis_unreachable(endpoints.redis_url, cause)
    elif isinstance(cause, psycopg.OperationalError) and endpoints is not None:
        error = postgres_unreachable(endpoints.database_url, cause)
    elif isinstance(cause, psycopg.Error):
        error = DependencyError(f"PostgreSQL refused a batch: {str(cause).strip().splitlines()[0]}")
    else:
        error = UsageError(f"cannot write the rejects file: {cause}")
    if report.rows and not report.dry_run:
        error = type(error)(
            f"{error} - stopped after {report.rows:,} rows ({report.accepted:,} leads queued); "
            "ingesting the input again is safe: rows already recorded count as duplicates"
        )
    return error
