"""`leadctl work` and `leadctl batch`: sending the queues."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from leadctl.commands.app import AppState, app, print_json, state_of
from leadctl.config import CHANNELS
from leadctl.connections import open_postgres, open_redis
from leadctl.errors import DependencyError, LeadctlError, UsageError
from leadctl.queue import streams

if TYPE_CHECKING:
    from leadctl.queue.sifting import CampaignFilter
    from leadctl.send.scheduled import BatchReport

CAMPAIGN_HELP = "Send only this campaign's leads (repeatable); the others stay queued, untouched."


def _channels(values: list[str]) -> list[str]:
    """Repeated --channel values, with `all` for every channel."""
    chosen: list[str] = []
    for value in values:
        names = CHANNELS if value == "all" else (value,)
        for name in names:
            if name not in CHANNELS:
                raise UsageError(f"--channel must be one of {', '.join(CHANNELS)} or all, not {value!r}")
            if name not in chosen:
                chosen.append(name)
    return chosen


def _check_dependencies(state: AppState, channels: list[str]) -> None:
    """Redis and PostgreSQL answer, and the channels' queues have this host's partition count (a
    config error here, before any worker starts)."""
    settings, endpoints = state.settings, state.endpoints
    client = open_redis(endpoints.redis_url, settings)
    try:
        streams.check_partitions(client, settings.namespace, channels, settings.redis.partitions)
    finally:
        client.close()
    open_postgres(endpoints.database_url, settings).close()


def _campaign_filters(
    state: AppState, channels: list[str], campaigns: list[str]
) -> dict[str, CampaignFilter]:
    """Each channel's campaign filter, its horizon noted now (none without --campaign)."""
    if not campaigns:
        return {}
    from leadctl.queue.sifting import campaign_filter

    settings = state.settings
    client = open_redis(state.endpoints.redis_url, settings)
    try:
        return {
            ch: campaign_filter(client, settings.namespace, ch, settings.redis.partitions, campaigns)
            for ch in channels
        }
    finally:
        client.close()


@app.command()
def work(
    ctx: typer.Context,
    channel: Annotated[
        list[str], typer.Option(help="Channel to send: sms, whatsapp, email or all (repeatable).")
    ],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes per channel (default: channels.<ch>.workers).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Sends in flight per worker.")] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queue and its pending list are empty.")
    ] = False,
    max_leads: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many leads per channel.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="This host's name in the consumer group.")] = None,
    campaign: Annotated[list[str] | None, typer.Option(help=CAMPAIGN_HELP + " Needs --burst.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Send the queued leads of one or more channels with N worker processes each.

    SIGTERM/Ctrl-C stops reading and lets in-flight sends finish; a second one stops at once.
    With --campaign (and --burst) only those campaigns' leads are sent; the others stay queued.
    Exit 1 when some leads were not sent, 2 on a usage error.
    """
    from leadctl.send.supervisor import PoolSpec, Supervisor

    state = state_of(ctx)
    settings = state.settings
    channels = _channels(channel)
    if campaign and not burst:
        raise UsageError("--campaign needs --burst: filtered workers go through the queue once and exit")
    _check_dependencies(state, channels)
    filters = _campaign_filters(state, channels, campaign or [])
    pools = [
        PoolSpec(
            ch,
            workers or settings.channel(ch).workers,
            concurrency or settings.channel(ch).concurrency,
            max_leads,
            filters.get(ch),
        )
        for ch in channels
    ]
    for pool in pools:
        state.say(f"{pool.channel}: {pool.workers} workers x {pool.concurrency} in flight")
    reports = Supervisor(settings, state.endpoints, pools, burst=burst, name=name).run()
    for report in reports.values():
        if report.fatal:
            raise DependencyError(f"{report.channel}: {report.fatal}")
    totals = sum((r.statuses for r in reports.values()), start=Counter())
    if as_json:
        print_json(
            {
                "statuses": dict(totals),
                "channels": {
                    ch: {
                        "statuses": dict(r.statuses),
                        "entries": r.entries,
                        "seconds": round(r.seconds, 3),
                        "leads_per_min": round(r.entries / r.seconds * 60) if r.seconds else 0,
                        "restarts": r.restarts,
                    }
                    for ch, r in reports.items()
                },
            }
        )
    else:
        for ch, r in reports.items():
            summary = (
                ", ".join(f"{n:,} {status}" for status, n in sorted(r.statuses.items())) or "nothing to send"
            )
            rate = r.entries / r.seconds * 60 if r.seconds else 0
            state.say(f"{ch}: {summary} in {r.seconds:.1f}s ({rate:,.0f} leads/min)")
    failed = any(r.unsent or r.crashed for r in reports.values())
    raise typer.Exit(1 if failed else 0)


@app.command()
def batch(
    ctx: typer.Context,
    channel: Annotated[
        list[str] | None, typer.Option(help="Channels to drain (repeatable; default: all).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Process at most this many leads.")] = None,
    max_seconds: Annotated[
        float | None, typer.Option(min=1, help="Time budget (default: batch.max_seconds, 14 minutes).")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes per channel.")] = None,
    every: Annotated[
        str | None, typer.Option(help="Run again on this schedule (e.g. 15m), for hosts without cron.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="This host's name in the consumer group.")] = None,
    campaign: Annotated[list[str] | None, typer.Option(help=CAMPAIGN_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """The cron job: drain the queues within a time budget, print a summary, exit 0/1/3.

    Runs one at a time per namespace: a run that finds another one working exits 0 at once.
    With --campaign only those campaigns' leads are sent; the others stay queued.
    Exit 0 when everything went, 1 when some leads failed, 3 when a dependency was down.
    """
    from leadctl.send.scheduled import BatchOptions, parse_every, run_batch

    state = state_of(ctx)
    settings = state.settings
    try:
        interval = parse_every(every) if every else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    campaigns = frozenset(campaign) if campaign else None
    options = BatchOptions(_channels(channel or ["all"]), limit, max_seconds, workers, name, campaigns)
    _check_dependencies(state, options.channels)
    client = open_redis(state.endpoints.redis_url, settings)
    while True:
        started = time.monotonic()
        report = run_batch(settings, state.endpoints, client, options, state.say)
        if report.fatal:
            raise DependencyError(report.fatal)
        if not report.skipped:
            _post_alerts(state)
        if as_json:
            print_json(report.as_json())
        if not report.skipped:
            _say_summary(state, report, channels=not as_json)
        if interval is None:
            raise typer.Exit(1 if report.unsent else 0)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _say_summary(state: AppState, report: BatchReport, channels: bool) -> None:
    """A batch run's summary on stderr: the campaigns it selected, and each channel's line."""
    if report.campaigns is not None:
        state.say(f"campaigns: {', '.join(report.campaigns)} (remaining: their leads still queued)")
    if report.unknown_campaigns:
        names = ", ".join(repr(c) for c in report.unknown_campaigns)
        state.say(f"no leads of campaign {names} in namespace {state.settings.namespace}: nothing to send")
    for ch, c in report.channels.items() if channels else ():
        state.say(
            f"{ch}: {c.sent:,} sent, {c.failed:,} failed, {c.in_doubt:,} in doubt, {c.dead:,} dead, "
            f"{c.deferred:,} deferred, {c.remaining:,} remaining ({c.leads_per_min:,.0f} leads/min)"
        )


def _post_alerts(state: AppState) -> None:
    """After a batch run, post alerts that started or ended (``alerts.webhook_url``), as `stats` does."""
    if not state.settings.alerts.webhook_url:
        return
    from leadctl.ops.stats import StatsSource

    source = StatsSource(state.settings, state.endpoints)
    try:
        for line in source.post_alerts(source.snapshot()):
            state.say(f"alert posted: {line}")
    except LeadctlError as exc:  # the batch itself went fine; say why no alert went out
        state.say(f"alerts not posted: {exc}")
    finally:
        source.close()


@app.command("workers")
def list_workers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the workers as one JSON object.")] = False,
) -> None:
    """The live worker processes on every host (from their heartbeats in Redis)."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from leadctl.send.heartbeats import live_workers

    state = state_of(ctx)
    client = open_redis(state.endpoints.redis_url, state.settings)
    beats = live_workers(client, state.settings.namespace)
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
