"""The storing half of ingest: batches of parsed leads recorded in PostgreSQL, then queued in Redis.

PostgreSQL is written first (COPY + one de-duplicating INSERT per batch), then the new leads'
ids are appended to their channel streams in one pipeline. A crash between the two leaves leads
``queued`` in PostgreSQL and missing from Redis; ``leadctl requeue`` puts them back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from leadctl import queue
from leadctl.ingest import ParseOptions, RejectsWriter, parse_leads
from leadctl.leads import Lead, Reject
from leadctl.metrics import record_ingest
from leadctl.store.leads import LeadWriter


@dataclass(slots=True)
class IngestReport:
    """Every input row accounted for: rows = accepted + rejected + duplicates + suppressed."""

    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    suppressed: int = 0
    seconds: float = 0.0
    rejects_files: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds) if self.seconds > 0 else 0,
            "rejects_file": self.rejects_files[0]
            if len(self.rejects_files) == 1
            else (self.rejects_files or None),
            "reasons": dict(self.reasons),
            "channels": dict(self.channels),
        }


def default_rejects_path(source: str) -> Path:
    """``leads.csv`` -> ``leads.csv.rejects.csv`` beside it; stdin -> ``stdin.rejects.csv`` here."""
    if source == "-":
        return Path("stdin.rejects.csv")
    return Path(f"{source}.rejects.csv")


class Ingestor:
    """Stores parsed leads for one namespace; ``dry_run`` validates and counts without writing."""

    def __init__(
        self,
        namespace: str,
        conn: psycopg.Connection | None,
        redis_client: redis.Redis | None,
        batch_size: int,
        *,
        dry_run: bool = False,
    ) -> None:
        self.namespace = namespace
        self.conn = conn
        self.redis = redis_client
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.writer = LeadWriter(namespace)
        self._ready_channels: set[str] = set()

    def _store(self, batch: Sequence[Lead], source: str, report: IngestReport) -> None:
        if self.dry_run or self.conn is None or self.redis is None:
            report.accepted += len(batch)
            report.channels.update(lead.channel for lead in batch)
            return
        recorded = self.writer.record(self.conn, batch, source)
        to_queue = [(r.channel, r.lead_id) for r in recorded if not r.suppressed]
        for channel in {channel for channel, _ in to_queue} - self._ready_channels:
            queue.ensure_group(self.redis, self.namespace, channel)
            self._ready_channels.add(channel)
        queue.enqueue(self.redis, self.namespace, to_queue)
        queued = Counter(channel for channel, _ in to_queue)
        suppressed = Counter(r.channel for r in recorded if r.suppressed)
        for channel in queued.keys() | suppressed.keys():
            record_ingest(self.redis, self.namespace, channel, queued[channel], suppressed[channel])
        report.accepted += len(to_queue)
        report.suppressed += len(recorded) - len(to_queue)
        report.duplicates += len(batch) - len(recorded)
        report.channels.update(channel for channel, _ in to_queue)

    def ingest(
        self,
        sources: Sequence[str],
        options: ParseOptions,
        config_columns: dict[str, str],
        rejects_path: Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Parse, store and queue every source; return the reconciled counts."""
        report = IngestReport()
        started = time.perf_counter()
        for source in sources:
            path = rejects_path or default_rejects_path(source)
            with RejectsWriter(path) as rejects:
                batch: list[Lead] = []
                for item in parse_leads(source, options, config_columns):
                    report.rows += 1
                    if isinstance(item, Reject):
                        report.rejected += 1
                        report.reasons[item.code] += 1
                        if not self.dry_run:
                            rejects.write(item)
                    else:
                        batch.append(item)
                        if len(batch) >= self.batch_size:
                            self._store(batch, source, report)
                            batch = []
                    if progress is not None and report.rows % 1000 == 0:
                        progress(report.rows)
                self._store(batch, source, report)
                if rejects.count and str(rejects.path) not in report.rejects_files:
                    report.rejects_files.append(str(rejects.path))
        if progress is not None:
            progress(report.rows)
        report.seconds = time.perf_counter() - started
        return report
