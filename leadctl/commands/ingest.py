"""`leadctl ingest`: lead files in, every row accounted for."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import psycopg
import redis
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from leadctl.commands.app import AppState, app, err, print_json, state_of
from leadctl.config import CHANNELS
from leadctl.connections import open_postgres, open_redis, postgres_unreachable, redis_unreachable
from leadctl.errors import DependencyError, LeadctlError, UsageError
from leadctl.queue import streams

if TYPE_CHECKING:
    from leadctl.ingest.pipeline import IngestReport, IngestStopped
    from leadctl.ingest.pipeline import Progress as IngestProgress

WRITERS = 2
"""PostgreSQL connections (writer threads) of one ingest: enough to keep PostgreSQL busy on 2 cores."""


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
    rejects: Annotated[
        Path | None,
        typer.Option(help="Rejects file, or directory for several inputs (default: <input>.rejects.csv)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate and count (in-input duplicates too) without writing anything; "
            "rejects are written only to an explicit --rejects.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Parse worker processes for big inputs (default: one per CPU; 0: none)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Validate, normalise, de-duplicate and queue lead files.

    Exit 0 when every row was accepted, a duplicate or suppressed; 1 when some were rejected (see
    the rejects file); 2 when an input is unusable; 3 when Redis or PostgreSQL is unreachable.
    """
    from leadctl.ingest import ParseOptions
    from leadctl.ingest.pipeline import Ingestor, IngestStopped
    from leadctl.ingest.workers import default_workers

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
        consent=settings.compliance.consent(),
    )
    conns: list[psycopg.Connection] = []
    redis_client = None
    if not dry_run:
        endpoints = state.endpoints
        redis_client = open_redis(endpoints.redis_url, settings)
        streams.check_partitions(redis_client, settings.namespace, CHANNELS, settings.redis.partitions)
        conns = [open_postgres(endpoints.database_url, settings) for _ in range(WRITERS)]
    ingestor = Ingestor(
        settings.namespace,
        conns,
        redis_client,
        settings.ingest.batch_size,
        dry_run=dry_run,
        workers=default_workers() if workers is None else workers,
        partitions=settings.redis.partitions,
    )
    try:
        with _progress_bar(state) as progress:
            report = ingestor.ingest(files, options, settings.ingest.columns, rejects, progress)
    except IngestStopped as stopped:
        error = _one_line(stopped, state)
        if as_json and stopped.report.rows:  # some rows were done: say which, for scripts too
            print_json({**stopped.report.as_json(), "error": str(error)})
        raise error from None
    finally:
        for conn in conns:
            conn.close()
    if as_json:
        print_json(report.as_json())
    else:
        _summary(report, state)
    raise typer.Exit(1 if report.rejected else 0)


def _one_line(stopped: IngestStopped, state: AppState) -> LeadctlError:
    """The error that stopped ingest, as the one line (and exit code) the user sees."""
    cause, report = stopped.cause, stopped.report
    error: LeadctlError
    if isinstance(cause, LeadctlError):
        error = cause
    elif isinstance(cause, redis.RedisError):
        error = redis_unreachable(state.endpoints.redis_url, cause)
    elif isinstance(cause, psycopg.OperationalError):
        error = postgres_unreachable(state.endpoints.database_url, cause)
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


@contextmanager
def _progress_bar(state: AppState) -> Iterator[Callable[[IngestProgress], None] | None]:
    """A rich progress bar on stderr (rows, rows/s, ETA from the bytes read); None when stderr is
    not a terminal or with --quiet."""
    if state.quiet or not err.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rows]:>12,} rows"),
        TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
        TimeRemainingColumn(),
    )
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=err, transient=True) as bar:

        def update(progress: IngestProgress) -> None:
            task = tasks.get(progress.source)
            if task is None:
                task = tasks[progress.source] = bar.add_task(
                    progress.source, total=progress.size, rows=0, rate=0.0
                )
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = progress.rows / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=progress.done or 0, rows=progress.rows, rate=rate)

        yield update


def _summary(report: IngestReport, state: AppState) -> None:
    def line(figures: object) -> str:
        rows, accepted, rejected, duplicates, suppressed = (
            getattr(figures, name) for name in ("rows", "accepted", "rejected", "duplicates", "suppressed")
        )
        return (
            f"{rows:,} rows: {accepted:,} accepted, {rejected:,} rejected, "
            f"{duplicates:,} duplicates, {suppressed:,} suppressed"
        )

    if len(report.files) > 1:
        for file in report.files:
            state.say(f"{file.source}: {line(file)}")
    rate = f" ({report.rows / report.seconds:,.0f} rows/s)" if report.seconds > 0 else ""
    state.say(
        f"{'total: ' if len(report.files) > 1 else ''}{line(report)} in {report.seconds:.2f}s{rate}"
        + (" - dry run: nothing written, duplicates counted within the input only" if report.dry_run else "")
    )
    total = report.total
    if total.reasons:
        reasons = ", ".join(f"{code} {count:,}" for code, count in total.reasons.most_common())
        state.say(f"rejected: {reasons}")
    for path in report.rejects_files:
        state.say(f"rejected rows with their line numbers and reasons: {path}")
