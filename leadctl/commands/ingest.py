"""`leadctl ingest`: lead files in, every row accounted for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadctl.commands.app import app, print_json, state_of
from leadctl.config import CHANNELS
from leadctl.connections import open_postgres, open_redis
from leadctl.errors import UsageError


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[
        list[str], typer.Argument(help="Lead files (CSV, TSV, JSON, NDJSON, optionally .gz); - for stdin.")
    ],
    channel: Annotated[
        str | None, typer.Option(help="Channel for rows that name none: sms, whatsapp, email.")
    ] = None,
    campaign: Annotated[str | None, typer.Option(help="Campaign tag (default: the file's name).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, tsv, json or ndjson (default: from the extension).")
    ] = None,
    nl: Annotated[
        bool, typer.Option("--nl", help="Newline-delimited JSON (same as --format ndjson).")
    ] = False,
    delimiter: Annotated[
        str | None, typer.Option(help="CSV delimiter (default: sniffed among , ; tab |).")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Input encoding (default: UTF-8, else CP1252).")
    ] = None,
    no_headers: Annotated[
        bool, typer.Option("--no-headers", help="The CSV has no header row; see --columns.")
    ] = False,
    columns: Annotated[
        str | None, typer.Option(help="Column names for --no-headers, comma-separated.")
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="Map a column to a lead field, e.g. --map telefone=phone."),
    ] = None,
    rejects: Annotated[Path | None, typer.Option(help="Rejects file (default: <input>.rejects.csv).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Validate, normalise, de-duplicate and queue lead files. Exit 1 when rows were rejected."""
    from leadctl.ingest import ParseOptions
    from leadctl.ingest.pipeline import Ingestor

    state = state_of(ctx)
    settings = state.settings
    if channel is not None and channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    pairs: dict[str, str] = {}
    for item in mapping or []:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise UsageError(f"--map takes COLUMN=FIELD, not {item!r}")
        pairs[source] = target
    options = ParseOptions(
        format="ndjson" if nl else fmt,
        delimiter=delimiter,
        encoding=encoding,
        no_headers=no_headers,
        columns=[c.strip() for c in columns.split(",")] if columns else None,
        mapping=pairs,
        channel=channel,
        campaign=campaign,
        region=settings.default_region,
    )
    conn = redis_client = None
    if not dry_run:
        endpoints = state.endpoints
        redis_client = open_redis(endpoints.redis_url, settings)
        conn = open_postgres(endpoints.database_url, settings)
    ingestor = Ingestor(settings.namespace, conn, redis_client, settings.ingest.batch_size, dry_run=dry_run)
    report = ingestor.ingest(files, options, settings.ingest.columns, rejects)
    if as_json:
        print_json(report.as_json())
    else:
        state.say(
            f"{report.rows:,} rows: {report.accepted:,} accepted, {report.rejected:,} rejected, "
            f"{report.duplicates:,} duplicates, {report.suppressed:,} suppressed "
            f"in {report.seconds:.2f}s" + (" (dry run: nothing written)" if dry_run else "")
        )
        for path in report.rejects_files:
            state.say(f"rejected rows with their reasons: {path}")
    raise typer.Exit(1 if report.rejected else 0)
