"""Alerts: the config's thresholds checked against each channel, their state in Redis, the webhook.

Four alerts per channel (``alerts.*`` in the config): ``queue_size`` (leads waiting, queued +
pending), ``error_rate`` (failed provider calls over the last 5 minutes), ``stalled`` (leads wait
and nothing was sent for ``stalled_s``), ``dead_letters`` (leads that went dead in 5 minutes).

State lives in Redis, so every host agrees: ``{ns:channel}:alerts`` holds when each active alert
started; ``{ns:channel}:alerts:posted`` the alerts whose start went to ``alerts.webhook_url``. A host
posts a start only when it is the one that adds it there (HSETNX) and an end only when it is the one
that removes it (HDEL), so several hosts watching never post twice.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import redis

from leadctl.config import CHANNELS, AlertSettings
from leadctl.queue import keys

log = logging.getLogger("leadctl.ops.alerts")

ALERTS: tuple[str, ...] = ("queue_size", "error_rate", "stalled", "dead_letters")


@dataclass(frozen=True, slots=True)
class Readings:
    """What the alerts look at in one channel."""

    backlog: int
    error_rate: float
    stalled_s: float
    dead_5m: int


@dataclass(frozen=True, slots=True)
class Alert:
    """An active alert; ``since`` is when it started (epoch seconds)."""

    name: str
    channel: str
    value: float
    threshold: float
    since: float

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "channel": self.channel,
            "value": self.value,
            "threshold": self.threshold,
            "since": _iso(self.since),
        }

    def describe(self) -> str:
        """One line for people: what is wrong and the threshold it crossed."""
        value, threshold = self.value, self.threshold
        text = {
            "queue_size": f"{value:,.0f} leads waiting (alert above {threshold:,.0f})",
            "error_rate": f"error rate {value:.1%} over 5 minutes (alert above {threshold:.1%})",
            "stalled": f"nothing sent for {value:,.0f} s while leads wait (alert after {threshold:,.0f} s)",
            "dead_letters": f"{value:,.0f} leads went dead in 5 minutes (alert above {threshold:,.0f})",
        }[self.name]
        return f"{self.channel}: {text}"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def firing(readings: dict[str, Readings], settings: AlertSettings) -> list[tuple[str, str, float, float]]:
    """(name, channel, value, threshold) of every alert whose threshold is crossed."""
    found: list[tuple[str, str, float, float]] = []
    for channel, r in readings.items():
        if r.backlog > settings.queue_size:
            found.append(("queue_size", channel, r.backlog, settings.queue_size))
        if r.error_rate > settings.error_rate:
            found.append(("error_rate", channel, r.error_rate, settings.error_rate))
        if r.backlog and r.stalled_s >= settings.stalled_s:
            found.append(("stalled", channel, round(r.stalled_s), settings.stalled_s))
        if r.dead_5m > settings.dead_letters:
            found.append(("dead_letters", channel, r.dead_5m, settings.dead_letters))
    return found


def track(
    client: redis.Redis, namespace: str, active: Iterable[tuple[str, str, float, float]], now: float
) -> list[Alert]:
    """Record which alerts are active in Redis (keeping their start time) and return them."""
    active = list(active)
    on = {(channel, name) for name, channel, _, _ in active}
    pipe = client.pipeline(transaction=False)
    for channel in CHANNELS:
        key = keys.alerts(namespace, channel)
        for name in ALERTS:
            if (channel, name) in on:
                pipe.hsetnx(key, name, now)
            else:
                pipe.hdel(key, name)
        pipe.hgetall(key)
    replies = pipe.execute()
    since: dict[tuple[str, str], float] = {}
    for index, channel in enumerate(CHANNELS):
        state = replies[(index + 1) * (len(ALERTS) + 1) - 1]
        since.update({(channel, name.decode()): float(at) for name, at in state.items()})
    return [
        Alert(name, channel, value, threshold, since.get((channel, name), now))
        for name, channel, value, threshold in active
    ]


class Webhook:
    """Posts a Slack-compatible ``{"text": ...}`` once when an alert starts and once when it ends."""

    def __init__(self, client: redis.Redis, namespace: str, url: str, timeout_s: float = 5.0) -> None:
        self.client = client
        self.namespace = namespace
        self.url = url
        self.timeout_s = timeout_s

    def update(self, alerts: Sequence[Alert]) -> list[str]:
        """Post the alerts that started or ended since the last update (by any host); return the texts."""
        pipe = self.client.pipeline(transaction=False)
        for channel in CHANNELS:
            pipe.hgetall(keys.alerts_posted(self.namespace, channel))
        posted = {
            (channel, name.decode()): float(since)
            for channel, state in zip(CHANNELS, pipe.execute(), strict=True)
            for name, since in state.items()
        }
        texts: list[str] = []
        for alert in alerts:
            key = keys.alerts_posted(self.namespace, alert.channel)
            if (alert.channel, alert.name) in posted or not self.client.hsetnx(key, alert.name, alert.since):
                continue
            text = f"[FIRING] leadctl {self.namespace}: {alert.describe()}"
            if self._post(text):
                texts.append(text)
            else:  # let the next update try again
                self.client.hdel(key, alert.name)
        still = {(a.channel, a.name) for a in alerts}
        for (channel, name), since in posted.items():
            key = keys.alerts_posted(self.namespace, channel)
            if (channel, name) in still or not self.client.hdel(key, name):
                continue
            text = f"[RESOLVED] leadctl {self.namespace}: {channel}: {name} is over (since {_iso(since)})"
            if self._post(text):
                texts.append(text)
            else:
                self.client.hset(key, name, since)
        return texts

    def _post(self, text: str) -> bool:
        request = urllib.request.Request(
            self.url,
            data=orjson.dumps({"text": text}),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except OSError as exc:  # URLError and HTTPError are OSErrors
            log.warning("alert webhook at %s failed: %s", urlsplit(self.url).hostname, exc)
            return False
        return True
