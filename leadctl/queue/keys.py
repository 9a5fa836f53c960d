"""Every Redis key leadctl uses, in one place.

Each channel's keys share the hash tag ``{namespace:channel}``, so on Redis Cluster a channel's
stream, dead letters and counters live in one slot and multi-key commands and scripts stay legal.

A channel's queue may be split in partitions (``redis.partitions``) to spread it over the slots of a
cluster: partition 0 is the channel's own stream ``{namespace:channel}:stream`` (so data queued
before partitioning stays readable), partition p > 0 is ``{namespace:channel:p}:stream``, each its
own slot. A lead's partition is its id modulo the partition count, which is recorded in Redis
(``partition_count``) so that hosts configured with different counts fail instead of stranding leads.
"""

from __future__ import annotations

GROUP = "leadctl"


def tag(namespace: str, channel: str) -> str:
    return f"{{{namespace}:{channel}}}"


def stream(namespace: str, channel: str, partition: int = 0) -> str:
    """The channel's queue (or one partition of it): one entry per lead to send."""
    if partition:
        return f"{{{namespace}:{channel}:{partition}}}:stream"
    return f"{tag(namespace, channel)}:stream"


def streams(namespace: str, channel: str, partitions: int) -> list[str]:
    """Every partition's stream of a channel, partition 0 first."""
    return [stream(namespace, channel, p) for p in range(partitions)]


def partition_count(namespace: str, channel: str) -> str:
    """The channel's partition count, recorded (SET NX) when its streams are first created, in
    partition 0's slot: every ingest, worker, batch and requeue checks ``redis.partitions`` against it."""
    return f"{tag(namespace, channel)}:partitions"


def partition_of(lead_id: int, partitions: int) -> int:
    """The partition a lead is queued in."""
    return lead_id % partitions


def delayed(namespace: str, channel: str, partition: int = 0) -> str:
    """Deferred leads (quiet hours, frequency caps) of one stream partition, in that partition's slot:
    a sorted set of lead ids scored by when they may be sent; due ones go back to the stream."""
    return stream(namespace, channel, partition).removesuffix(":stream") + ":delayed"


def caps_tag(scope: str) -> str:
    """The hash tag of a caps scope (a namespace, or several sharing ``compliance.caps_scope``)."""
    return f"{{{scope}:caps}}"


def cap(scope: str, channel: str, digest: str) -> str:
    """One contact's recent sends on a channel (frequency caps); ``digest`` is its salted hash."""
    return f"{caps_tag(scope)}:{channel}:{digest}"


def caps_salt(scope: str) -> str:
    """The random salt of a caps scope's contact hashes."""
    return f"{caps_tag(scope)}:salt"


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
