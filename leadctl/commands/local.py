"""Commands for running leadctl locally: the sandbox provider, the embedded servers, the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadctl.commands.app import LOCAL, Leadctl, app, state_of
from leadctl.local.demo import run_demo
from leadctl.local.sandbox.server import run_sandbox
from leadctl.local.services import embedded_status, stop_embedded

services_app = Leadctl(help="The embedded Redis and PostgreSQL leadctl runs when none is configured.")
app.add_typer(services_app, name="services", rich_help_panel=LOCAL)


@app.command(rich_help_panel=LOCAL)
def sandbox(
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port (0: any free port).")] = 8990,
    latency_ms: Annotated[float, typer.Option(metavar="MS", help="Median answer latency.")] = 0.0,
    latency_p99_ms: Annotated[
        float | None,
        typer.Option(metavar="MS", help="99th percentile answer latency (default about 3.2x the median)."),
    ] = None,
    error_rate: Annotated[
        float, typer.Option(metavar="RATIO", min=0, max=1, help="Fraction answered 500.")
    ] = 0.0,
    rate_limit: Annotated[
        float | None, typer.Option(metavar="PER_S", help="Requests/s before answering 429.")
    ] = None,
    throttle_rate: Annotated[
        float, typer.Option(metavar="RATIO", min=0, max=1, help="Fraction answered 429.")
    ] = 0.0,
    timeout_rate: Annotated[
        float, typer.Option(metavar="RATIO", min=0, max=1, help="Fraction accepted but never answered.")
    ] = 0.0,
    hang_s: Annotated[
        float, typer.Option(metavar="SECONDS", min=0, help="How long an unanswered request hangs.")
    ] = 30.0,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Random seed, for a reproducible run.")
    ] = None,
    callback_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Post signed status callbacks to `leadctl webhooks serve` here."),
    ] = None,
    callback_delay_ms: Annotated[
        float, typer.Option(metavar="MS", min=0, help="Delay before each status.")
    ] = 50.0,
    callback_duplicate_rate: Annotated[
        float, typer.Option(metavar="RATIO", min=0, max=1, help="Fraction of callbacks sent twice.")
    ] = 0.0,
    callback_reorder_rate: Annotated[
        float,
        typer.Option(
            metavar="RATIO", min=0, max=1, help="Fraction of messages whose statuses come last first."
        ),
    ] = 0.0,
    callback_failure_rate: Annotated[
        float,
        typer.Option(metavar="RATIO", min=0, max=1, help="Fraction of messages that end undelivered."),
    ] = 0.0,
) -> None:
    """Run local fake providers (Twilio, WhatsApp Cloud, Zenvia, SendGrid, webhook) on one port."""

    run_sandbox(
        host,
        port,
        latency_ms=latency_ms,
        latency_p99_ms=latency_p99_ms,
        error_rate=error_rate,
        rate_limit=rate_limit,
        throttle_rate=throttle_rate,
        timeout_rate=timeout_rate,
        hang_s=hang_s,
        seed=seed,
        callback_url=callback_url,
        callback_delay_ms=callback_delay_ms,
        callback_duplicate_rate=callback_duplicate_rate,
        callback_reorder_rate=callback_reorder_rate,
        callback_failure_rate=callback_failure_rate,
    )


@services_app.command("status")
def services_status(ctx: typer.Context) -> None:
    """Show the embedded servers."""

    for status in embedded_status(state_of(ctx).settings.data_dir):
        state = "running" if status.running else "stopped"
        typer.echo(f"{status.name:<11} {state:<8} {status.url or '-'}  (data: {status.data_dir})")


@services_app.command("stop")
def services_stop(ctx: typer.Context) -> None:
    """Stop the embedded servers (their data stays on disk)."""

    stopped = stop_embedded(state_of(ctx).settings.data_dir)
    typer.echo(
        ", ".join(s.name for s in stopped) + " stopped" if stopped else "no embedded server was running"
    )


@app.command(rich_help_panel=LOCAL)
def demo(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option(metavar="PATH", help="Lead file to send.")] = Path(
        "examples/leads.csv"
    ),
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Worker processes per channel.")] = 2,
) -> None:
    """Ingest a lead file and send it through the local sandbox provider, end to end."""

    state = state_of(ctx)
    raise typer.Exit(run_demo(state.settings, state.endpoints, file, workers, state.say))
