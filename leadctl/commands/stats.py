"""`leadctl stats`: the whole fleet's figures once, as a live dashboard, or for Prometheus."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from leadctl.commands.app import WATCH, app, print_json, state_of
from leadctl.commands.options import JsonOutput
from leadctl.errors import UsageError
from leadctl.ops import dashboard
from leadctl.ops.prometheus import parse_address
from leadctl.ops.prometheus import serve as serve_metrics
from leadctl.ops.stats import StatsSource


@app.command(rich_help_panel=WATCH)
def stats(
    ctx: typer.Context,
    as_json: JsonOutput = False,
    watch: Annotated[bool, typer.Option("--watch", help="A live dashboard, redrawn until Ctrl-C.")] = False,
    interval: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0.1, help="Seconds between refreshes (--watch, --serve)."),
    ] = 2.0,
    serve: Annotated[
        str | None,
        typer.Option("--serve", metavar="HOST:PORT", help="Serve Prometheus metrics at /metrics."),
    ] = None,
) -> None:
    """Queues, outcomes, rates, latency, workers, alerts and spend per channel, campaign and provider.

    Figures come from Redis and PostgreSQL: every host sees the whole fleet. With
    `alerts.webhook_url` set, --watch and --serve post each alert's start and end once.
    """

    if watch and serve is not None:
        raise UsageError("choose one of --watch and --serve")
    if as_json and (watch or serve is not None):
        raise UsageError("--json prints the figures once: leave out --watch and --serve")
    state = state_of(ctx)
    source = StatsSource(state.settings, state.endpoints)
    try:
        if serve is not None:
            host, port = parse_address(serve)
            serve_metrics(source, host, port, interval, state.say)
        elif watch:
            dashboard.watch(source.snapshot, Console(), interval, on_snapshot=source.post_alerts)
        else:
            snapshot = source.snapshot()
            if as_json:
                print_json(snapshot.as_json())
            else:
                Console().print(dashboard.render(snapshot, full=True))
    except KeyboardInterrupt:
        state.say("stopped")
    finally:
        source.close()
