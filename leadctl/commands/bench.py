"""`leadctl bench`: throughput and memory benchmarks against the configured Redis and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadctl.bench.dispatch import bench_dispatch
from leadctl.bench.ingest import DEFAULT_SIZES, bench_ingest
from leadctl.commands.app import MEASURE, Leadctl, app, print_json, state_of
from leadctl.commands.options import JsonOutput

bench_app = Leadctl(help="Benchmarks (not tests): each works in a namespace of its own and drops it.")
app.add_typer(bench_app, name="bench", rich_help_panel=MEASURE)


@bench_app.command("ingest")
def ingest(
    ctx: typer.Context,
    rows: Annotated[
        list[int] | None,
        typer.Option(
            "--rows",
            metavar="N",
            min=1,
            help="Leads in a generated file; repeatable (default: 100,000 and 1,000,000).",
        ),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            metavar="COMMIT",
            help="Also run the leadctl of this git commit on the same files (from a git checkout).",
        ),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", metavar="PATH", help="Where the generated files are kept (default: `DATA_DIR/bench`)."
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """Generate lead files and ingest each end to end as `leadctl ingest` does.

    The files have 30% phones to normalise, 2% invalid rows and 1% duplicates. Measured: leads/s,
    peak RSS of every process, CPU of leadctl, PostgreSQL and Redis.
    """

    state = state_of(ctx)
    report = bench_ingest(
        state.settings,
        state.endpoints,
        state.config,
        rows or DEFAULT_SIZES,
        compare,
        directory,
        state.say,
    )
    if as_json:
        print_json(report.as_json())
        return
    table = Table(title="leadctl ingest, end to end (parse, validate, PostgreSQL, Redis)")
    for column in (
        "version",
        "rows",
        "leads/s",
        "seconds",
        "peak RSS MB",
        "processes",
        "CPU s leadctl/pg/redis",
    ):
        table.add_column(column, justify="right")
    for run in report.runs:
        cpu = run.cpu_s
        table.add_row(
            run.label,
            f"{run.rows:,}",
            f"{run.leads_per_s:,.0f}",
            f"{run.seconds:.2f}",
            f"{run.peak_rss_mb:,.0f}",
            str(run.processes),
            f"{cpu['leadctl']:.1f} / {cpu['postgres']:.1f} / {cpu['redis']:.1f}",
        )
    Console().print(table)
    for goal, met in report.goals().items():
        state.say(f"goal {goal}: {'met' if met else 'NOT met'}")


@bench_app.command("dispatch")
def dispatch(
    ctx: typer.Context,
    leads: Annotated[int, typer.Option(metavar="N", min=100, help="Leads generated and sent.")] = 200_000,
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Worker processes.")] = 2,
    concurrency: Annotated[int, typer.Option(metavar="N", min=1, help="Sends in flight per worker.")] = 200,
    as_json: JsonOutput = False,
) -> None:
    """Send generated leads with `work --burst` to a sandbox that answers at once.

    Then it posts as many straight to the sandbox (the raw HTTP ceiling). Measured: leads/min, the
    ratio, latency, worker memory, Redis commands and PostgreSQL WAL per lead. Fewer sends in flight
    leave the cores idle between calls. Saved in `DATA_DIR/bench/dispatch.json` for `leadctl plan`.
    """

    state = state_of(ctx)
    result, path = bench_dispatch(state.settings, state.endpoints, leads, workers, concurrency)
    if as_json:
        print_json(result.as_json())
        return
    table = Table(title=f"leadctl work --burst, {leads:,} leads, {workers} workers x {concurrency} in flight")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in result.as_json().items():
        table.add_row(name, f"{value:,}" if isinstance(value, int | float) else str(value))
    Console().print(table)
    state.say(f"saved to {path} (read by `leadctl plan`)")
