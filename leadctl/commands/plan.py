"""`leadctl plan`: the capacity and cost a send rate needs, computed from measurements."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import MEASURE, app, print_json, state_of
from leadctl.commands.options import JsonOutput
from leadctl.errors import UsageError
from leadctl.ops.plan import Plan, capacity_plan, parse_mix, parse_rate, parse_sender_rates


@app.command(rich_help_panel=MEASURE)
def plan(
    ctx: typer.Context,
    rate: Annotated[str, typer.Option(metavar="RATE", help="Leads to send: 100000/min, 1500/s or 6M/h.")],
    channel_mix: Annotated[
        str, typer.Option(metavar="MIX", help="Share of each channel, e.g. sms=40,whatsapp=40,email=20.")
    ] = "sms=40,whatsapp=40,email=20",
    latency_ms: Annotated[
        float, typer.Option(metavar="MS", min=1, help="The providers' answer time (p50).")
    ] = 200.0,
    cores_per_host: Annotated[int, typer.Option(metavar="N", min=1, help="Cores of one worker host.")] = 8,
    hours_per_day: Annotated[
        float,
        typer.Option(
            metavar="HOURS", min=0.1, max=24, help="Hours a day at this rate, for monthly volumes and cost."
        ),
    ] = 24.0,
    retention_days: Annotated[
        int, typer.Option(metavar="DAYS", min=1, help="Days kept before `leadctl prune`.")
    ] = 90,
    sender_mps: Annotated[
        str | None,
        typer.Option(
            metavar="RATES",
            help="Messages/s one sender may send, e.g. sms=10 (default: the provider's, see above).",
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """The workers, hosts, sender numbers, Redis, PostgreSQL and monthly cost that a send rate needs.

    The design's phase and cost table, computed instead of guessed. Throughput per worker comes from
    the last `leadctl bench dispatch` (saved under `data_dir`), else a measured default; sender
    limits from `providers.NAME.rate_limit_per_sender`, else the providers' documented defaults (SMS
    short code 100/s, WhatsApp number 80/s); prices from `providers.NAME.price`, else the design's
    (SMS $0.008, WhatsApp $0.012, email $0.002).
    """

    state = state_of(ctx)
    settings = state.settings
    try:
        per_min = parse_rate(rate)
        mix = parse_mix(channel_mix)
        senders = parse_sender_rates(sender_mps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result, design = capacity_plan(
        settings,
        per_min,
        mix,
        senders,
        latency_ms=latency_ms,
        cores_per_host=cores_per_host,
        hours_per_day=hours_per_day,
        retention_days=retention_days,
    )
    if as_json:
        print_json({**result.as_json(), "design_phases": design})
        return
    _render(result, design)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _render(result: Plan, design: dict[str, dict[str, Any]]) -> None:
    console = Console()
    money = result.cost["currency"]
    shares = ", ".join(f"{name} {share:.0%}" for name, share in result.mix.items())
    table = Table(title=f"leadctl plan: {result.leads_per_min:,.0f} leads/min ({shares})")
    table.add_column("channel")
    for column in ("leads/min", "per worker", "workers", "cores", "in flight", "senders", f"API {money}/mo"):
        table.add_column(column, justify="right")
    for name, c in result.channels.items():
        table.add_row(
            f"{name} ({c.provider})",
            f"{c.leads_per_min:,.0f}",
            f"{c.worker_leads_per_min:,.0f} {'cpu' if c.bound_by == 'cpu' else 'i/o'}",
            f"{c.workers:,}",
            f"{c.cores:,.1f}",
            f"{c.requests_in_flight:,.0f}",
            f"{c.senders:,} x {c.sender_per_second:g}/s" if c.senders is not None else "-",
            f"{c.cost_per_month:,.0f}",
        )
    console.print(table)
    redis, pg, cost = result.redis, result.postgres, result.cost
    kind = f"a cluster of {redis['masters']} masters, a replica each" if redis["cluster"] else "one master"
    partitions = _plural(redis["partitions"], "partition")
    console.print(
        f"fleet: {_plural(result.hosts, 'host')} of {result.assumptions.cores_per_host} cores, "
        f"{_plural(result.workers, 'worker')} ({result.cores:.1f} cores busy)\n"
        f"redis: {kind} (and its replica), {partitions} per channel, "
        f"{redis['ops_per_s']:,.0f} commands/s, {redis['cpu_cores']:.2f} cores\n"
        f"postgres: {pg['row_writes_per_s']:,.0f} row writes/s, {pg['wal_mb_per_s']:.1f} MB/s WAL, "
        f"{pg['connections']:,} connections{' (PgBouncer)' if pg['pgbouncer'] else ''}, "
        f"{pg['storage_gb_per_day']:,.1f} GB/day, {pg['storage_gb_retained']:,.0f} GB kept\n"
        f"cost a month: API {cost['api']['total']:,.0f} + infrastructure "
        f"{cost['infrastructure']['total']:,.0f} = {cost['total']:,.0f} {money}",
        highlight=False,
    )
    phase_table = Table(title="The design's phases, computed")
    for column in ("phase", "leads/min", "hosts", "workers", "Redis masters", "PG writes/s", "API/month"):
        phase_table.add_column(column, justify="left" if column == "phase" else "right")
    phase_table.add_column("infra/month", justify="right")
    for name, row in design.items():
        phase_table.add_row(
            name,
            f"{row['leads_per_min']:,.0f}",
            str(row["hosts"]),
            str(row["workers"]),
            str(row["redis_masters"]),
            f"{row['postgres_row_writes_per_s']:,}",
            f"{row['api_per_month']:,}",
            f"{row['infrastructure_per_month']:,}",
        )
    console.print(phase_table)
    given = result.assumptions
    console.print(
        f"assumed: {given.core_leads_per_min:,.0f} leads/min per worker core ({given.measured_by}), "
        f"{given.latency_ms:g} ms provider latency, {given.hours_per_day:g} h/day, "
        f"{given.utilization:.0%} utilization",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"- {note}", highlight=False)
