"""Rich views of a stats Snapshot: the tables `leadctl stats` prints and the live `--watch` dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from leadctl.errors import DependencyError
from leadctl.ops.stats import Snapshot

CHANNEL_NAMES = {"sms": "SMS", "whatsapp": "WhatsApp", "email": "Email"}
_BARS = "▁▂▃▄▅▆▇█"


def _count(value: int) -> str:
    return f"{value:,}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("leads", lambda f: _count(f["leads"])),
    ("queued", lambda f: _count(f["queued"])),
    ("pending", lambda f: _count(f["pending"])),
    ("oldest pending", lambda f: f"{f['oldest_pending_s']:,.0f} s"),
    ("sent", lambda f: _count(f["sent"])),
    ("failed", lambda f: _count(f["failed"])),
    ("dead", lambda f: _count(f["dead"])),
    ("in doubt", lambda f: _count(f["in_doubt"])),
    ("suppressed", lambda f: _count(f["suppressed"])),
    ("retried", lambda f: _count(f["retried"])),
    ("sent last minute", lambda f: _count(f["sent_last_minute"])),
    (
        "leads/min 1m · 5m · 15m",
        lambda f: " · ".join(f"{f[f'leads_per_min_{w}']:,.0f}" for w in ("1m", "5m", "15m")),
    ),
    ("error rate 5m", lambda f: f"{f['error_rate']:.1%}"),
    ("p50 · p95 · p99 ms", lambda f: " · ".join(_ms(f[f"latency_p{q}_ms"]) for q in (50, 95, 99))),
    ("spend today · month", lambda f: f"{f['spend']['today']:,.2f} · {f['spend']['month']:,.2f}"),
)
_CHANNEL_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("workers", lambda f: _count(f["workers"])),
    ("dead letters", lambda f: _count(f["dead_letters"])),
    ("suppression list", lambda f: _count(f["suppression_list"])),
)


def _figures_table(title: str, columns: dict[str, dict[str, Any]], rows: Sequence[tuple[str, Any]]) -> Table:
    """One column per channel (campaign, provider), one row per figure."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in columns:
        table.add_column(CHANNEL_NAMES.get(name, name), justify="right")
    for label, show in rows:
        table.add_row(label, *(show(figures) for figures in columns.values()))
    return table


def _cost_table(cost: dict[str, Any]) -> Table:
    table = Table(title=f"Cost ({cost['currency']})", title_justify="left")
    table.add_column("channel")
    for column in ("today", "this month", "projected month"):
        table.add_column(column, justify="right")
    for channel, name in (*CHANNEL_NAMES.items(), ("total", "Total")):
        row = cost[channel]
        style = "bold" if channel == "total" else None
        table.add_row(name, *(f"{row[p]:,.2f}" for p in ("today", "month", "projected_month")), style=style)
    return table


def sparkline(values: Sequence[int]) -> str:
    """One block character per value, scaled to the largest."""
    top = max(values, default=0)
    if not top:
        return _BARS[0] * len(values)
    return "".join(_BARS[round(value / top * (len(_BARS) - 1))] for value in values)


def _throughput(snapshot: Snapshot) -> Panel:
    lines = Text()
    for channel, series in snapshot.series.items():
        lines.append(f"{CHANNEL_NAMES[channel]:<9}", style="bold")
        lines.append(sparkline(series), style="cyan")
        lines.append(f"  {snapshot.channels[channel]['leads_per_min_1m']:,} leads in the last minute\n")
    lines.rstrip()
    return Panel(lines, title="leads/min, last 15 minutes", title_align="left")


def _alerts(snapshot: Snapshot) -> Panel:
    if not snapshot.alerts:
        return Panel(Text("no alerts", style="green"), title="alerts", title_align="left")
    text = Text()
    for alert in snapshot.alerts:
        since = time.strftime("%H:%M:%S", time.gmtime(alert.since))
        text.append(f"{alert.name}  ", style="bold red")
        text.append(f"{alert.describe()}  (since {since} UTC)\n")
    text.rstrip()
    return Panel(text, title=f"alerts ({len(snapshot.alerts)})", title_align="left", border_style="red")


def _workers(snapshot: Snapshot) -> Table:
    table = Table(title="workers", title_justify="left")
    for column in ("host", "pid", "channel"):
        table.add_column(column)
    table.add_column("sends/s", justify="right")
    for w in snapshot.workers:
        table.add_row(w["host"], str(w["pid"]), w["channel"], f"{w['sends_per_s']:,.1f}")
    return table


def render(snapshot: Snapshot, *, full: bool = False) -> RenderableType:
    """The per-channel table, throughput, alerts and cost; ``full`` adds campaigns, providers, workers."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.taken_at))
    parts: list[RenderableType] = [
        _figures_table(f"leadctl · {snapshot.namespace} · {stamp}", snapshot.channels, _ROWS + _CHANNEL_ROWS),
        _throughput(snapshot),
        _alerts(snapshot),
        _cost_table(snapshot.cost),
    ]
    if full:
        if snapshot.campaigns:
            parts.append(_figures_table("campaigns", snapshot.campaigns, _ROWS))
        if snapshot.providers:
            parts.append(_figures_table("providers", snapshot.providers, _ROWS))
        if snapshot.workers:
            parts.append(_workers(snapshot))
    return Group(*parts)


def live_view(snapshot: Snapshot | None, problem: str | None) -> RenderableType:
    """The dashboard as last seen, under a banner while the servers cannot be reached."""
    parts: list[RenderableType] = []
    if problem:
        banner = Text(f"reconnecting… {problem}", style="bold yellow")
        parts.append(Panel(banner, border_style="yellow"))
    if snapshot is not None:
        parts.append(render(snapshot))
    elif not problem:
        parts.append(Text("connecting…"))
    return Group(*parts)


def watch(
    take: Callable[[], Snapshot],
    console: Console,
    interval_s: float,
    on_snapshot: Callable[[Snapshot], object] | None = None,
) -> None:
    """Redraw the dashboard every ``interval_s`` until interrupted; a server outage shows as a banner."""
    snapshot: Snapshot | None = None
    problem: str | None = None
    with Live(live_view(None, None), console=console, auto_refresh=False, transient=False) as live:
        while True:
            try:
                snapshot = take()
                problem = None
                if on_snapshot is not None:
                    on_snapshot(snapshot)
            except DependencyError as exc:
                problem = str(exc)
            live.update(live_view(snapshot, problem), refresh=True)
            time.sleep(interval_s)
