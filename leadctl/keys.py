"""Every Redis key leadctl uses, in one place.

Each channel's keys share the hash tag ``{namespace:channel}``, so on Redis Cluster a channel's
stream, dead letters and counters live in one slot and multi-key commands and scripts stay legal.
"""

from __future__ import annotations

GROUP = "leadctl"


def tag(namespace: str, channel: str) -> str:
    return f"{{{namespace}:{channel}}}"


def stream(namespace: str, channel: str) -> str:
    """The channel's queue: one entry per lead to send."""
    return f"{tag(namespace, channel)}:stream"


def dead_letters(namespace: str, channel: str) -> str:
    """Entries that could not be sent after every attempt, with their reason."""
    return f"{tag(namespace, channel)}:dead"


def rate_tag(namespace: str, provider: str) -> str:
    """The hash tag of a provider's rate-limit keys: its limits and pause share one slot."""
    return f"{{{namespace}:rl:{provider}}}"


def rate_limit(namespace: str, provider: str, sender: str | None = None) -> str:
    """GCRA state (the theoretical arrival time) of a provider's send rate, or of one of its senders."""
    tag_ = rate_tag(namespace, provider)
    return f"{tag_}:tat" if sender is None else f"{tag_}:sender:{sender}"


def provider_pause(namespace: str, provider: str) -> str:
    """Present while a provider is paused (after a 429): every worker waits out its TTL."""
    return f"{rate_tag(namespace, provider)}:pause"


def namespace_pattern(namespace: str) -> str:
    """A SCAN pattern matching every key of a namespace (tests and `services` use it to clean up)."""
    return f"{{{namespace}:*"


def workers(namespace: str) -> str:
    """Heartbeats of live worker processes on every host: a hash of consumer -> JSON."""
    return f"{{{namespace}:workers}}:heartbeats"


def batch_lock(namespace: str) -> str:
    """The lease that keeps two `leadctl batch` runs from processing at once."""
    return f"{{{namespace}:batch}}:lock"


def metrics_slot(namespace: str, channel: str, slot: int) -> str:
    """A channel's counters of one 10-second slot (``epoch // 10``); expires after the 15-minute window."""
    return f"{tag(namespace, channel)}:m:{slot}"


def metrics_totals(namespace: str, channel: str) -> str:
    """A channel's counters since the beginning (retried, attempts, latency buckets), never expiring."""
    return f"{tag(namespace, channel)}:m:total"


def metrics_spend(namespace: str, channel: str, period: str) -> str:
    """Messages sent per provider and campaign in one UTC day (``YYYYMMDD``) or month (``YYYYMM``)."""
    return f"{tag(namespace, channel)}:m:sent:{period}"


def alerts(namespace: str, channel: str) -> str:
    """A channel's active alerts: alert name -> since (epoch seconds)."""
    return f"{tag(namespace, channel)}:alerts"


def alerts_posted(namespace: str, channel: str) -> str:
    """Alerts whose start was posted to the webhook, so hosts post each start and end once."""
    return f"{tag(namespace, channel)}:alerts:posted"
