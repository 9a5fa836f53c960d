"""Retention: delete the leads whose delivery finished before a cutoff, with their deliveries.

A lead goes when its delivery is finished (sent, failed, dead, in doubt or suppressed) and finished
(or, suppressed at ingest, was queued) before the cutoff; queued and sending leads always stay, and so
does the suppression list. Deleting a lead deletes its delivery (the ``leads_deleted`` trigger). Each
batch is its own short transaction, so workers and ingest go on meanwhile. Once pruned, a contact is new
again: ingesting it later queues it again.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres
from leadctl.store.prune import count_finished_before, delete_finished_before

_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_age(text: str) -> timedelta:
    """'90d' -> 90 days; accepts m, h, d and w."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"--older-than takes an age like 90d, 12w, 36h or 30m, not {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(slots=True)
class PruneReport:
    """Leads deleted (or, in a dry run, that would be) per channel."""

    cutoff: datetime
    dry_run: bool
    leads: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(timespec="seconds"),
            "dry_run": self.dry_run,
            "leads": sum(self.leads.values()),
            "channels": dict(self.leads),
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


def prune(
    conn: psycopg.Connection,
    namespace: str,
    older_than: timedelta,
    *,
    batch_size: int = 10_000,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Delete (``dry_run``: count) the finished leads older than ``older_than``, ``batch_size`` a
    transaction. ``conn`` must be in autocommit mode."""
    started = time.monotonic()
    cutoff = (now or datetime.now(UTC)) - older_than
    report = PruneReport(cutoff, dry_run)
    if dry_run:
        report.leads.update(count_finished_before(conn, namespace, cutoff))
    else:
        while True:
            channels = delete_finished_before(conn, namespace, cutoff, batch_size)
            if not channels:
                break
            report.batches += 1
            report.leads.update(channels)
            if len(channels) < batch_size:
                break
    report.seconds = time.monotonic() - started
    return report


def prune_namespace(
    settings: Settings, endpoints: Endpoints, older_than: timedelta, *, batch_size: int, dry_run: bool
) -> PruneReport:
    """`leadctl prune`: ``prune`` the namespace of ``settings``, over a connection of its own."""
    with open_postgres(endpoints.database_url, settings) as conn:
        return prune(conn, settings.namespace, older_than, batch_size=batch_size, dry_run=dry_run)
