"""PostgreSQL's CPU per lead for ingest's recording statement, and for variants adding or dropping a part.

Usage: python -m leadctl.bench.ingest_postgres FILE [--repeat N]

Parses FILE once (as ingest does, into COPY text batches), then records every batch through one
connection into a fresh schema per variant, and reports the backend's CPU time per lead (the
minimum over N rounds, variants interleaved: this machine's timings move by a third between runs):

- ``statement``: store.leads.LeadWriter as ingest runs it (COPY to staging, de-duplicating
  INSERT into leads, deliveries rows for suppressed contacts, per-channel ids);
- ``row per lead``: the same giving every new lead its deliveries row at once, ``queued`` (as ingest
  did before migration 7 moved that to the claim: what that saves);
- ``plain insert``: no ON CONFLICT and no unique (channel, contact) index (the floor for one heap
  row and its primary key; it does not de-duplicate, so it is a bound, not an option).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

import psutil
import psycopg

from leadctl.config import load_settings
from leadctl.errors import LeadctlError
from leadctl.ingest.batches import parse_batch
from leadctl.ingest.parse import ParseOptions, open_leads
from leadctl.ingest.pipeline import _batches
from leadctl.local.services import resolve_endpoints
from leadctl.store.leads import LeadWriter
from leadctl.store.migrations import drop_namespace, migrate, quoted_schema

BATCH_ROWS = 5000


_SUPPRESSED_ROWS = "SELECT id, channel, campaign, 'suppressed' FROM marked WHERE suppressed"


def _row_per_lead(statement: str) -> str:
    assert _SUPPRESSED_ROWS in statement
    every = (
        "SELECT id, channel, campaign, CASE WHEN suppressed THEN 'suppressed' ELSE 'queued' END FROM marked"
    )
    return statement.replace(_SUPPRESSED_ROWS, every)


def _without_delivery(statement: str) -> str:
    trimmed = re.sub(r", delivery AS \(.*?\n\)\n", "\n", statement, flags=re.S)
    assert "delivery AS" not in trimmed
    return trimmed


def _plain(statement: str) -> str:
    return _without_delivery(statement).replace("ON CONFLICT (channel, contact) DO NOTHING", "")


VARIANTS: dict[str, tuple[Callable[[str], str], str | None]] = {
    "statement": (lambda statement: statement, None),
    "row per lead": (_row_per_lead, None),
    "plain insert": (_plain, "ALTER TABLE {schema}.leads DROP CONSTRAINT leads_channel_contact_key"),
}


def copy_batches(path: str) -> list[str]:
    """FILE's accepted leads as COPY text, one string per ingest batch."""
    lead_file = open_leads(path, ParseOptions(), {})
    try:
        return [
            parse_batch(lead_file.parser, items, lead_file.format, 1, False).parts[0]
            for items in _batches(lead_file.records(), BATCH_ROWS)
        ]
    finally:
        lead_file.close()


def leads_in(batches: list[str]) -> int:
    """Leads in COPY text batches (a line each)."""
    return sum(batch.count("\n") for batch in batches)


def backend_cpu_per_lead(url: str, variant: str, batches: list[str]) -> float:
    """Microseconds of backend CPU per lead to record ``batches`` with ``variant``, in a new schema."""
    namespace = "bench_pg_" + re.sub(r"\W", "_", variant)
    schema = quoted_schema(namespace)
    rewrite, ddl = VARIANTS[variant]
    with psycopg.connect(url, autocommit=True) as admin:
        drop_namespace(admin, namespace)
        migrate(admin, namespace)
        if ddl:
            admin.execute(ddl.format(schema=schema))
    try:
        writer = LeadWriter(namespace)
        writer._per_channel = rewrite(writer._per_channel)
        with psycopg.connect(url) as conn:
            backend = psutil.Process(conn.info.backend_pid)
            before = sum(backend.cpu_times()[:2])
            for batch in batches:
                writer.record_copy(conn, batch, "bench")
            cpu = sum(backend.cpu_times()[:2]) - before
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            drop_namespace(admin, namespace)
    return cpu / leads_in(batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a lead file, e.g. one `leadctl bench ingest` generated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings()
    url = resolve_endpoints(settings, print).database_url
    started = time.perf_counter()
    try:
        batches = copy_batches(args.file)
    except LeadctlError as exc:
        raise SystemExit(f"ingest_postgres: {exc}") from None
    best = {variant: float("inf") for variant in VARIANTS}
    for _ in range(args.repeat):
        for variant in VARIANTS:
            best[variant] = min(best[variant], backend_cpu_per_lead(url, variant, batches))
    seconds = time.perf_counter() - started
    print(f"{leads_in(batches):,} leads, best of {args.repeat} rounds ({seconds:.0f} s):")
    for variant, micros in best.items():
        print(f"  {variant:<16} {micros:6.1f} us of PostgreSQL CPU per lead")


if __name__ == "__main__":
    main()
