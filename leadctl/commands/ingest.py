"""`leadctl ingest`: lead files in, every row accounted for."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from leadctl.commands.app import SEND, AppState, app, err, print_json, state_of
from leadctl.commands.options import (
    CampaignTag,
    Delimiter,
    DryRun,
    InputEncoding,
    InputFormat,
    JsonOutput,
    LeadChannel,
    lead_channel,
)
from leadctl.errors import UsageError
from leadctl.ingest import ParseOptions
from leadctl.ingest.pipeline import IngestReport, IngestStopped, ingest_files
from leadctl.ingest.pipeline import Progress as IngestProgress


@app.command(rich_help_panel=SEND)
def ingest(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE",
            help="Lead files (CSV, TSV, JSON, NDJSON, optionally .gz); - for stdin.",
            show_default=False,
        ),
    ],
    channel: LeadChannel = None,
    campaign: CampaignTag = None,
    fmt: InputFormat = None,
    nl: Annotated[
        bool, typer.Option("--nl", help="Newline-delimited JSON (same as --format ndjson).")
    ] = False,
    delimiter: Delimiter = None,
    encoding: InputEncoding = None,
    no_headers: Annotated[
        bool, typer.Option("--no-headers", help="The CSV has no header row; see --columns.")
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(metavar="NAMES", help="Column names for --no-headers, comma-separated."),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map", metavar="COLUMN=FIELD", help="Map a column to a lead field, e.g. --map telefone=phone."
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Rejects file, or directory for several inputs (default: `INPUT.rejects.csv`).",
        ),
    ] = None,
    dry_run: DryRun = False,
    parsers: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=0, help="Parse processes for big inputs (default: one per CPU; 0: none)."
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """Validate, normalise, de-duplicate and queue lead files.

    With --dry-run it validates and counts (duplicates within the input too) without writing
    anything; rejects are then written only to an explicit --rejects.

    Exit 0 when every row was accepted, a duplicate or suppressed; 1 when some were rejected (see
    the rejects file); 2 when an input is unusable; 3 when Redis or PostgreSQL is unreachable.
    """

    state = state_of(ctx)
    settings = state.settings
    chosen = lead_channel(channel)
    options = ParseOptions(
        format="ndjson" if nl else fmt,
        delimiter=delimiter,
        encoding=encoding,
        no_headers=no_headers,
        columns=[c.strip() for c in columns.split(",")] if columns else None,
        mapping=_pairs(mapping or []),
        channel=chosen,
        campaign=campaign,
    )
    try:
        with _progress_bar(state) as progress:
            report = ingest_files(
                settings,
                None if dry_run else state.endpoints,
                files,
                options,
                rejects=rejects,
                parsers=parsers,
                progress=progress,
            )
    except IngestStopped as stopped:
        if as_json and stopped.report.rows:  # some rows were done: say which, for scripts too
            print_json({**stopped.report.as_json(), "error": str(stopped.cause)})
        raise stopped.cause from None
    if as_json:
        print_json(report.as_json())
    else:
        _summary(report, state)
    raise typer.Exit(1 if report.rejected else 0)


def _pairs(mapping: list[str]) -> dict[str, str]:
    """--map COLUMN=FIELD values as a mapping."""
    pairs: dict[str, str] = {}
    for item in mapping:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise UsageError(f"--map takes COLUMN=FIELD, not {item!r}")
        pairs[source] = target
    return pairs


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
