"""`leadctl work` and `leadctl batch`: sending the queues."""

from __future__ import annotations

from typing import Annotated

import typer

from leadctl.commands.app import app, print_json, state_of
from leadctl.config import CHANNELS
from leadctl.connections import open_postgres, open_redis
from leadctl.errors import DependencyError, UsageError


@app.command()
def work(
    ctx: typer.Context,
    channel: Annotated[str, typer.Option(help="Channel to send: sms, whatsapp or email.")],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: channels.<ch>.workers).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Sends in flight per worker.")] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queue and its pending list are empty.")
    ] = False,
    max_leads: Annotated[int | None, typer.Option(min=1, help="Stop after this many leads.")] = None,
    name: Annotated[str | None, typer.Option(help="This host's name in the consumer group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Send queued leads of a channel with N worker processes. Exit 1 when some leads were not sent."""
    from leadctl.pool import Supervisor

    state = state_of(ctx)
    settings = state.settings
    if channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    endpoints = state.endpoints
    open_redis(endpoints.redis_url, settings).close()
    open_postgres(endpoints.database_url, settings).close()
    channel_settings = settings.channel(channel)
    supervisor = Supervisor(
        settings,
        endpoints,
        channel,
        workers or channel_settings.workers,
        concurrency or channel_settings.concurrency,
        burst=burst,
        max_leads=max_leads,
        name=name,
    )
    state.say(f"{channel}: {supervisor.workers} workers x {supervisor.concurrency} in flight")
    report = supervisor.run()
    if report.fatal:
        raise DependencyError(f"{channel}: {report.fatal}")
    statuses = dict(report.statuses)
    rate = report.entries / report.seconds * 60 if report.seconds else 0
    if as_json:
        print_json(
            {
                "channel": channel,
                "statuses": statuses,
                "entries": report.entries,
                "seconds": round(report.seconds, 3),
                "leads_per_min": round(rate),
                "restarts": report.restarts,
            }
        )
    else:
        summary = (
            ", ".join(f"{count:,} {status}" for status, count in sorted(statuses.items()))
            or "nothing to send"
        )
        state.say(f"{channel}: {summary} in {report.seconds:.1f}s ({rate:,.0f} leads/min)")
    unsent = sum(statuses.get(s, 0) for s in ("failed", "dead", "in_doubt"))
    raise typer.Exit(1 if unsent or report.crashed else 0)


@app.command()
def batch(ctx: typer.Context) -> None:
    """The cron job: drain the queues within a time budget (arrives with the workers issue)."""
    raise UsageError(
        "leadctl batch is not implemented yet: run `leadctl work --channel CH --burst` meanwhile"
    )
