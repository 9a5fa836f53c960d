"""`leadctl bench`: throughput and memory benchmarks against the configured Redis and PostgreSQL."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import app, print_json, state_of
from leadctl.errors import UsageError

bench_app = typer.Typer(help="Benchmarks (not tests): each works in a namespace of its own and drops it.")
app.add_typer(bench_app, name="bench")


@bench_app.command("ingest")
def ingest(
    ctx: typer.Context,
    rows: Annotated[
        list[int] | None, typer.Option("--rows", min=1, help="Leads in the generated file; repeatable.")
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(help="Also run the leadctl of this git commit on the same files (from a git checkout)."),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the generated files are kept (default: <data_dir>/bench)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Generate lead files (30% phones to normalise, 2% invalid, 1% duplicates) and ingest each end to
    end as `leadctl ingest` does: leads/s, peak RSS of every process, CPU of leadctl, PostgreSQL, Redis."""
    from leadctl.bench.ingest import checkout, run_bench

    state = state_of(ctx)
    settings = state.settings
    endpoints = state.endpoints
    workdir = directory or settings.data_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LEADCTL_REDIS_URL": endpoints.redis_url,
        "LEADCTL_DATABASE_URL": endpoints.database_url,
    }
    if state.config is not None:
        env["LEADCTL_CONFIG"] = str(state.config.resolve())
    compared = None
    if compare is not None:
        try:
            compared = (compare, checkout(compare, workdir))
        except (ValueError, OSError) as exc:
            raise UsageError(f"--compare {compare}: {exc}") from None
    report = run_bench(
        rows or [100_000, 1_000_000],
        workdir.resolve(),
        env,
        endpoints.redis_url,
        endpoints.database_url,
        sys.executable,
        compared,
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
    leads: Annotated[int, typer.Option(min=100, help="Leads generated and sent.")] = 200_000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    concurrency: Annotated[
        int,
        typer.Option(min=1, help="Sends in flight per worker (fewer leave the cores idle between calls)."),
    ] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Send generated leads with `work --burst` to a sandbox that answers at once, then post as many
    straight to it (the raw HTTP ceiling): leads/min, the ratio, latency, worker memory, Redis
    commands and PostgreSQL WAL per lead. Saved in <data_dir>/bench/dispatch.json for `leadctl plan`."""
    from leadctl.bench.dispatch import run_dispatch_bench
    from leadctl.ops.measured import save_result

    state = state_of(ctx)
    result = run_dispatch_bench(state.settings, state.endpoints, leads, workers, concurrency)
    path = save_result(result, state.settings.data_dir)
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
