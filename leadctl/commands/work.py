"""`leadctl work`, `leadctl batch` and `leadctl workers`: sending the queues, and who is sending."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import SEND, WATCH, AppState, app, print_json, state_of
from leadctl.commands.options import (
    Campaigns,
    Channels,
    ChannelsOrAll,
    ConsumerName,
    JsonOutput,
    SendsInFlight,
    WorkersPerChannel,
    channels,
)
from leadctl.errors import UsageError
from leadctl.ops.stats import post_alert_changes
from leadctl.send.heartbeats import fleet_workers
from leadctl.send.scheduled import BatchOptions, BatchReport, parse_every, run_batches
from leadctl.send.supervisor import WorkSpec, run_workers


@app.command(rich_help_panel=SEND)
def work(
    ctx: typer.Context,
    channel: Channels,
    workers: WorkersPerChannel = None,
    concurrency: SendsInFlight = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queue and its pending list are empty.")
    ] = False,
    max_leads: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Stop after this many leads per channel.")
    ] = None,
    name: ConsumerName = None,
    campaign: Campaigns = None,
    as_json: JsonOutput = False,
) -> None:
    """Send the queued leads of one or more channels with N worker processes each.

    SIGTERM/Ctrl-C stops reading and lets in-flight sends finish; a second one stops at once. With
    --campaign (which needs --burst) only those campaigns' leads are sent; the others stay queued.

    Exit 1 when some leads were not sent, 2 on a usage error, 3 when a dependency is unreachable.
    """

    state = state_of(ctx)
    settings = state.settings
    chosen = channels(channel)
    if campaign and not burst:
        raise UsageError("--campaign needs --burst: filtered workers go through the queue once and exit")
    spec = WorkSpec(chosen, workers, concurrency, burst, max_leads, campaign or (), name)
    report = run_workers(settings, state.endpoints, spec, state.say)
    if as_json:
        print_json(report.as_json())
    else:
        for ch, r in report.channels.items():
            summary = (
                ", ".join(f"{n:,} {status}" for status, n in sorted(r.statuses.items())) or "nothing to send"
            )
            rate = r.entries / r.seconds * 60 if r.seconds else 0
            state.say(f"{ch}: {summary} in {r.seconds:.1f}s ({rate:,.0f} leads/min)")
    raise typer.Exit(1 if report.failed else 0)


@app.command(rich_help_panel=SEND)
def batch(
    ctx: typer.Context,
    channel: ChannelsOrAll = None,
    limit: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Process at most this many leads.")
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", min=1, help="Time budget (default: `batch.max_seconds`, 14 minutes)."
        ),
    ] = None,
    workers: WorkersPerChannel = None,
    every: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION", help="Run again on this schedule (e.g. 15m), for hosts without cron."
        ),
    ] = None,
    name: ConsumerName = None,
    campaign: Campaigns = None,
    as_json: JsonOutput = False,
) -> None:
    """The cron job: drain the queues within a time budget, print a summary, exit 0, 1 or 3.

    Runs one at a time per namespace: a run that finds another one working exits 0 at once. With
    --campaign only those campaigns' leads are sent; the others stay queued.

    Exit 0 when everything went, 1 when some leads failed, 3 when a dependency was down.
    """

    state = state_of(ctx)
    settings = state.settings
    try:
        every_s = parse_every(every) if every else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    campaigns = frozenset(campaign) if campaign else None
    options = BatchOptions(channels(channel), limit, max_seconds, workers, name, campaigns)
    endpoints = state.endpoints

    def show(report: BatchReport) -> None:
        if not report.skipped:
            post_alert_changes(settings, endpoints, state.say)
        if as_json:
            print_json(report.as_json())
        if not report.skipped:
            _say_summary(state, report, per_channel=not as_json)

    report = run_batches(settings, endpoints, options, state.say, show, every_s)
    raise typer.Exit(1 if report.unsent else 0)


def _say_summary(state: AppState, report: BatchReport, per_channel: bool) -> None:
    """A batch run's summary on stderr: the campaigns it selected, and each channel's line."""
    if report.campaigns is not None:
        state.say(f"campaigns: {', '.join(report.campaigns)} (remaining: their leads still queued)")
    if report.unknown_campaigns:
        names = ", ".join(repr(c) for c in report.unknown_campaigns)
        state.say(f"no leads of campaign {names} in namespace {state.settings.namespace}: nothing to send")
    for ch, c in report.channels.items() if per_channel else ():
        state.say(
            f"{ch}: {c.sent:,} sent, {c.failed:,} failed, {c.in_doubt:,} in doubt, {c.dead:,} dead, "
            f"{c.deferred:,} deferred, {c.remaining:,} remaining ({c.leads_per_min:,.0f} leads/min)"
        )


@app.command("workers", rich_help_panel=WATCH)
def list_workers(ctx: typer.Context, as_json: JsonOutput = False) -> None:
    """The live worker processes on every host (from their heartbeats in Redis)."""

    state = state_of(ctx)
    beats = fleet_workers(state.settings, state.endpoints)
    if as_json:
        print_json({"workers": [asdict(b) for b in beats]})
        return
    table = Table(title=f"{len(beats)} live workers · namespace {state.settings.namespace}")
    for column in ("host", "pid", "channel", "sends/s", "sent", "last seen"):
        table.add_column(column, justify="right" if column in ("pid", "sends/s", "sent") else "left")
    now = time.time()
    for b in beats:
        table.add_row(
            b.host,
            str(b.pid),
            b.channel,
            f"{b.sends_per_s:,.1f}",
            f"{b.sent:,}",
            f"{now - b.last_seen:.0f}s ago",
        )
    Console().print(table)
