"""`leadctl stats`: queue depth and delivery outcomes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import app, print_json, state_of
from leadctl.connections import open_postgres, open_redis


@app.command()
def stats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Queue depth and delivery outcomes per channel."""
    from leadctl.stats import channel_stats

    state = state_of(ctx)
    settings = state.settings
    endpoints = state.endpoints
    redis_client = open_redis(endpoints.redis_url, settings)
    with open_postgres(endpoints.database_url, settings) as conn:
        figures = channel_stats(redis_client, conn, settings.namespace)
    if as_json:
        print_json({"channels": figures})
        return
    table = Table(title=f"leadctl · namespace {settings.namespace}")
    columns = list(next(iter(figures.values())))
    table.add_column("channel")
    for column in columns:
        table.add_column(column, justify="right")
    for channel, values in figures.items():
        table.add_row(channel, *(f"{values[c]:,}" for c in columns))
    Console().print(table)
