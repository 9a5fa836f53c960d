"""`leadctl stats --serve`: the figures of `leadctl stats` in Prometheus text format at /metrics.

A custom collector takes a fresh snapshot on every scrape, so any number of hosts can serve it and
all agree. Lead statuses are gauges (``leadctl_leads_total`` counts the leads in each status now);
provider calls, errors, retries and the latency histogram are counters since the beginning.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from leadctl.errors import DependencyError, UsageError
from leadctl.ops.stats import Snapshot, StatsSource, count_by_status, status_figures
from leadctl.send import metrics
from leadctl.store.reports import DeliveryGroup

log = logging.getLogger("leadctl.ops.prometheus")

_UP = "1 when Redis and PostgreSQL answered this scrape."
_CHANNEL_GAUGES = (
    ("leadctl_queue_depth", "queued", "Leads queued: stream entries not yet read."),
    ("leadctl_pending", "pending", "Leads pending: read from the stream, not yet acknowledged."),
    ("leadctl_oldest_pending_seconds", "oldest_pending_s", "Longest idle among the oldest pending entries."),
    ("leadctl_dead_letters", "dead_letters", "Entries in the dead-letter stream."),
    ("leadctl_suppression_list", "suppression_list", "Contacts suppressed on the channel."),
    ("leadctl_workers", "workers", "Live worker processes (heartbeats)."),
    ("leadctl_error_rate", "error_rate", "Failed provider calls / provider calls, last 5 minutes."),
    ("leadctl_stalled_seconds", "stalled_s", "Seconds without a send while leads wait."),
)


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--serve wants HOST:PORT (e.g. 127.0.0.1:9100), not {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _leads(groups: list[DeliveryGroup]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "leadctl_leads_total",
        "Leads per channel, campaign and status; each lead is in exactly one status.",
        labels=["channel", "campaign", "status"],
    )
    grouped: dict[tuple[str, str], list[DeliveryGroup]] = defaultdict(list)
    for group in groups:
        grouped[(group.channel, group.campaign)].append(group)
    for (channel, campaign), members in sorted(grouped.items()):
        figures = status_figures(count_by_status(members), 0)
        figures.pop("leads")
        for status, count in figures.items():
            family.add_metric([channel, campaign, status], count)
    return family


def _calls(snapshot: Snapshot) -> Iterator[Metric]:
    latency = HistogramMetricFamily(
        "leadctl_send_latency_seconds", "Provider call time.", labels=["channel", "provider"]
    )
    counters = {
        stat: CounterMetricFamily(f"leadctl_{stat}", doc, labels=["channel", "provider"])
        for stat, doc in (
            ("attempts", "Provider calls."),
            ("errors", "Provider calls that failed (retried or final)."),
            ("retried", "Provider calls after a lead's first."),
        )
    }
    for channel, source in snapshot.counters.items():
        for provider in sorted(metrics.names_of([source], "p")):
            dim = f"p:{provider}"
            buckets, cumulative = [], 0
            counts = metrics.latency_buckets([source.totals], dim)
            for bound, count in zip((*metrics.LATENCY_BOUNDS_MS, None), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound is None else f"{bound / 1000:g}", cumulative))
            latency.add_metric(
                [channel, provider], buckets, source.totals.get(f"{dim}|lat_us", 0) / 1_000_000
            )
            for stat, family in counters.items():
                family.add_metric([channel, provider], source.totals.get(f"{dim}|{stat}", 0))
    yield latency
    yield from counters.values()


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """Every metric of a snapshot."""
    yield GaugeMetricFamily("leadctl_up", _UP, value=1)
    yield _leads(snapshot.groups)
    for name, key, doc in _CHANNEL_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=["channel"])
        for channel, figures in snapshot.channels.items():
            family.add_metric([channel], figures[key])
        yield family
    rate = GaugeMetricFamily(
        "leadctl_leads_per_minute", "Leads finished per minute.", labels=["channel", "window"]
    )
    spend = GaugeMetricFamily(
        "leadctl_spend", "Spend per period (UTC).", labels=["channel", "period", "currency"]
    )
    for channel, figures in snapshot.channels.items():
        for window in ("1m", "5m", "15m"):
            rate.add_metric([channel, window], figures[f"leads_per_min_{window}"])
        for period, value in figures["spend"].items():
            spend.add_metric([channel, period, snapshot.cost["currency"]], value)
    yield rate
    yield spend
    yield from _calls(snapshot)
    alert = GaugeMetricFamily("leadctl_alert", "Active leadctl alerts (1).", labels=["channel", "alert"])
    for active in snapshot.alerts:
        alert.add_metric([active.channel, active.name], 1)
    yield alert


class StatsCollector(Collector):
    """Reads a fresh snapshot per scrape; only ``leadctl_up 0`` while a server is unreachable."""

    def __init__(self, source: StatsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self.source.snapshot()
        except DependencyError as exc:
            log.warning("scrape without figures: %s", exc)
            yield GaugeMetricFamily("leadctl_up", _UP, value=0)
            return
        yield from families(snapshot)


def serve(source: StatsSource, host: str, port: int, interval_s: float, say: Callable[[str], None]) -> None:
    """Serve /metrics until interrupted; meanwhile post alert changes to the webhook every ``interval_s``."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(source))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    say(f"serving Prometheus metrics on http://{host}:{server.server_port}/metrics (Ctrl-C stops)")
    outage = False
    try:
        while True:
            if source.settings.alerts.webhook_url:
                try:
                    source.post_alerts(source.snapshot())
                    outage = False
                except DependencyError as exc:
                    if not outage:
                        log.warning("alerts not checked: %s", exc)
                    outage = True
            time.sleep(interval_s)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
