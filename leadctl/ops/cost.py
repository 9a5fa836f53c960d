"""What the messages cost: sends counted in Redis per provider and campaign, priced from the config.

``providers.<name>.price`` is the price of one message (or a mapping per channel) in
``providers.<name>.currency``. Spend is computed when read, so it follows the configured prices;
the projection is the rate of the last 15 minutes held for a 30-day month.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from leadctl.config import CHANNELS, Settings
from leadctl.errors import ConfigError
from leadctl.send.metrics import WINDOW_MINUTES, ChannelCounters

MINUTES_PER_MONTH = 30 * 24 * 60
PERIODS: tuple[str, ...] = ("today", "month", "projected_month")


def currency(settings: Settings) -> str:
    """The one currency of the configured prices (USD when none is set)."""
    found = {p.currency for p in settings.providers.values() if p.price}
    if len(found) > 1:
        raise ConfigError(
            f"providers' prices are in several currencies ({', '.join(sorted(found))}): use one"
        )
    return found.pop() if found else "USD"


def _sends(counts: Mapping[str, int]) -> Iterator[tuple[str, str, int]]:
    """(provider, campaign, messages) of a ``provider|campaign`` -> count mapping."""
    for name, count in counts.items():
        provider, _, campaign = name.partition("|")
        yield provider, campaign, count


def _window_sends(counters: ChannelCounters) -> Iterator[tuple[str, str, int]]:
    for slot in counters.slots:
        for name, count in slot.items():
            if name.startswith("x:"):
                yield from _sends({name[2:].rpartition("|")[0]: count})


def spend(
    settings: Settings,
    counters: Mapping[str, ChannelCounters],
    *,
    campaign: str | None = None,
    provider: str | None = None,
) -> dict[str, float]:
    """Spend today, this month (UTC) and projected for a month, of the sends matching the filters."""
    totals = dict.fromkeys(PERIODS, 0.0)
    for channel, source in counters.items():
        for period, sends in (
            ("today", _sends(source.day)),
            ("month", _sends(source.month)),
            ("projected_month", _window_sends(source)),
        ):
            for sent_by, sent_for, count in sends:
                if (provider is None or sent_by == provider) and (campaign is None or sent_for == campaign):
                    totals[period] += count * settings.provider(sent_by).price_for(channel)
    totals["projected_month"] *= MINUTES_PER_MONTH / WINDOW_MINUTES
    return {period: round(value, 4) for period, value in totals.items()}


def cost_table(settings: Settings, counters: Mapping[str, ChannelCounters]) -> dict[str, object]:
    """The design's cost table: spend per channel (SMS, WhatsApp, Email; counters of each) and in total."""
    table: dict[str, object] = {"currency": currency(settings)}
    total = dict.fromkeys(PERIODS, 0.0)
    for channel in CHANNELS:
        row = spend(settings, {channel: counters[channel]})
        table[channel] = row
        for period in PERIODS:
            total[period] += row[period]
    table["total"] = {period: round(value, 4) for period, value in total.items()}
    return table
