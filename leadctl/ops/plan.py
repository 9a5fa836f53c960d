"""`leadctl plan`: what a send rate needs — workers, hosts, sender numbers, Redis, PostgreSQL, cost.

The model, per channel (leads per second r, its share of the rate):

- a worker process sends ``min(core rate, concurrency / provider latency)`` leads a second: CPU-bound
  at the rate one worker reaches on a core of its own (measured by `leadctl bench dispatch`, whose
  sandbox answers at once), I/O-bound at its sends in flight over the provider's answer time;
- workers = r / (that rate x ``utilization``); cores = r / (core rate x ``utilization``); hosts =
  all cores / cores per host;
- sender numbers = r / the messages a second one sender may send (``rate_limit_per_sender`` of the
  channel's provider when configured, else the provider's documented default, SENDERS);
- Redis: CPU per lead (measured by the bench, every primary) x r against ``utilization`` of a core
  per master; a cluster when one master is not enough, with partitions spreading each channel;
- PostgreSQL: four row writes per lead (the lead, its delivery, the claim, the outcome), WAL and
  storage per lead as measured, and one pool of ``database.worker_pool_size`` per worker;
- cost: messages a month x the provider's configured ``price`` (else DEFAULT_PRICES), plus hosts,
  Redis nodes and PostgreSQL at the design's unit prices.

Every figure the model does not measure is a documented default that an option or the config
overrides; the output lists the ones it used.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from leadctl.config import CHANNELS, Settings
from leadctl.ops.cost import currency
from leadctl.ops.measured import DispatchBenchResult, load_result

DEFAULT_MIX = {"sms": 0.4, "whatsapp": 0.4, "email": 0.2}

DEFAULT_CORE_LEADS_PER_MIN = 30_000.0
"""One worker process on a core of its own, when no bench result is saved: `leadctl bench dispatch`
measured 63,000-92,000 leads/min with 2 workers on a 2-core machine that also ran Redis, PostgreSQL
and the sandbox; half the lower figure per core."""
DEFAULT_LATENCY_MS = 200.0
"""A provider's answer time (p50) when none is given: Twilio, Meta and SendGrid answer in 100-300 ms."""
DEFAULT_REDIS_CPU_US_PER_LEAD = 15.0
"""Redis CPU to queue, read, acknowledge and count one lead, when no bench result is saved: measured
9 us on a single Redis, 15-17 us over a 3-master cluster's primaries (leadctl/bench/cluster.py)."""
DEFAULT_REDIS_COMMANDS_PER_LEAD = 0.2
"""Redis commands per lead sent (batched reads and acknowledgements, counters once a second), as
measured, when no bench result is saved."""
INGEST_COMMANDS_PER_LEAD = 1
"""The XADD of each lead, inside ingest's one Lua call per batch."""
DEFAULT_WAL_BYTES_PER_LEAD = 2_500.0
DEFAULT_STORAGE_BYTES_PER_LEAD = 650.0
ROW_WRITES_PER_LEAD = 4
UTILIZATION = 0.7
"""Plan every resource to run at 70% of what it can do: headroom for bursts, retries and a failed host."""
MINUTES_PER_MONTH = 30 * 24 * 60

DEFAULT_PRICES = {"sms": 0.008, "whatsapp": 0.012, "email": 0.002}
"""Per message, USD, when no provider price is configured: the design's API cost table ($8,640,
$12,960 and $2,160 a month) is these prices times 1.08 million messages a month per channel."""
SERVER_MONTHLY = 500.0
"""A worker host a month (the design: 5 servers, $2,500)."""
REDIS_NODE_MONTHLY = 500.0 / 3
"""A Redis node a month (the design: a 3-node cluster, $500)."""
POSTGRES_MONTHLY = 800.0
"""The PostgreSQL server a month (the design: $800)."""


@dataclass(frozen=True, slots=True)
class Sender:
    """What one sender may send, by default, on a channel's usual provider."""

    kind: str
    per_second: float | None
    source: str


SENDERS: dict[tuple[str, str | None], Sender] = {
    ("sms", None): Sender(
        "short code",
        100.0,
        "Twilio: a short code sends 100 segments/s (US, CA, UK); a long code 1/s in the US and Canada, "
        "a toll-free number 3/s (25-150/s with high throughput), any number 10/s to other countries",
    ),
    ("whatsapp", "twilio"): Sender(
        "WhatsApp sender",
        10.0,
        "Twilio: a WhatsApp sender sends 10 text messages/s by default, up to 50/s on request",
    ),
    ("whatsapp", None): Sender(
        "business phone number",
        80.0,
        "WhatsApp Cloud API: 80 messages/s per business phone number, 1,000/s after Meta's automatic "
        "upgrade (which needs the unlimited messaging tier)",
    ),
    ("email", None): Sender(
        "sending domain",
        None,
        "SendGrid: no per-sender rate; up to 1,000 personalizations per Mail Send request",
    ),
}


def sender_for(channel: str, provider_type: str) -> Sender:
    """The default sender limit of a channel on a provider (of this type)."""
    return SENDERS.get((channel, provider_type)) or SENDERS[(channel, None)]


TWILIO_CONCURRENCY = 100
"""Twilio's default limit of concurrent REST API requests per account (429 beyond; raised on request)."""
WHATSAPP_UNLIMITED_TIER = 100_000
"""The highest bounded WhatsApp messaging tier: unique users reached outside a customer-service window
in 24 hours; beyond it the business portfolio needs the unlimited tier."""
DESIGN_PHASES = {"phase 2": 20_000.0, "phase 3": 50_000.0, "phase 4": 100_000.0, "1M/min": 1_000_000.0}
"""The design's phases (leads/min) and its open question."""


def parse_rate(text: str) -> float:
    """'100000/min', '1,000,000/min', '1500/s', '6M/h' -> leads per minute."""
    match = re.fullmatch(r"\s*([\d_,.]+)\s*([kKmM]?)\s*/\s*(s|sec|min|m|h|hour)\s*", text)
    if not match:
        raise ValueError(f"--rate takes leads per unit, like 100000/min, 1500/s or 6M/h; not {text!r}")
    number = float(match.group(1).replace(",", "").replace("_", ""))
    number *= {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]
    per_min = number * {"s": 60, "sec": 60, "min": 1, "m": 1, "h": 1 / 60, "hour": 1 / 60}[match.group(3)]
    if per_min <= 0:
        raise ValueError("--rate must be more than 0")
    return per_min


def parse_mix(text: str) -> dict[str, float]:
    """'sms=40,whatsapp=40,email=20' -> shares adding up to 1."""
    shares: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in CHANNELS:
            raise ValueError(f"--channel-mix: {name!r} is not a channel ({', '.join(CHANNELS)})")
        try:
            shares[name] = float(value)
        except ValueError:
            raise ValueError(f"--channel-mix: {part.strip()!r} is not channel=share") from None
        if shares[name] < 0:
            raise ValueError(f"--channel-mix: {name} cannot be negative")
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("--channel-mix: the shares add up to 0")
    return {name: share / total for name, share in shares.items()}


@dataclass(frozen=True, slots=True)
class Assumptions:
    """Every input of the model, and where the measured ones come from."""

    core_leads_per_min: float
    measured_by: str
    latency_ms: float
    cores_per_host: int
    hours_per_day: float
    redis_cpu_us_per_lead: float
    redis_commands_per_lead: float
    postgres_wal_bytes_per_lead: float
    postgres_bytes_per_lead: float
    retention_days: int
    utilization: float = UTILIZATION


def assumptions(
    bench: DispatchBenchResult | None,
    *,
    latency_ms: float = DEFAULT_LATENCY_MS,
    cores_per_host: int = 8,
    hours_per_day: float = 24.0,
    retention_days: int = 90,
) -> Assumptions:
    """The model's inputs: the saved bench result's where there is one, else the defaults."""
    if bench is None or not bench.leads_per_min:
        return Assumptions(
            DEFAULT_CORE_LEADS_PER_MIN,
            "the default: no `leadctl bench dispatch` result saved",
            latency_ms,
            cores_per_host,
            hours_per_day,
            DEFAULT_REDIS_CPU_US_PER_LEAD,
            DEFAULT_REDIS_COMMANDS_PER_LEAD,
            DEFAULT_WAL_BYTES_PER_LEAD,
            DEFAULT_STORAGE_BYTES_PER_LEAD,
            retention_days,
        )
    return Assumptions(
        bench.leads_per_min_per_core,
        f"leadctl bench dispatch: {bench.leads_per_min:,.0f} leads/min, {bench.workers} workers, "
        f"{bench.cpus} CPUs",
        latency_ms,
        cores_per_host,
        hours_per_day,
        bench.redis_cpu_us_per_lead or DEFAULT_REDIS_CPU_US_PER_LEAD,
        bench.redis_commands_per_lead or DEFAULT_REDIS_COMMANDS_PER_LEAD,
        bench.postgres_wal_bytes_per_lead or DEFAULT_WAL_BYTES_PER_LEAD,
        bench.postgres_bytes_per_lead or DEFAULT_STORAGE_BYTES_PER_LEAD,
        retention_days,
    )


@dataclass(slots=True)
class ChannelPlan:
    leads_per_min: float
    provider: str
    worker_leads_per_min: float
    """What one worker sends, bound by CPU or by concurrency / latency, whichever is lower."""
    bound_by: str
    workers: int
    cores: float
    requests_in_flight: float
    sender: str
    sender_per_second: float | None
    senders: int | None
    messages_per_month: float
    price: float
    cost_per_month: float


@dataclass(slots=True)
class Plan:
    leads_per_min: float
    mix: dict[str, float]
    assumptions: Assumptions
    channels: dict[str, ChannelPlan]
    hosts: int
    workers: int
    cores: float
    redis: dict[str, Any]
    postgres: dict[str, Any]
    cost: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def rounded(value: Any) -> Any:
            if isinstance(value, float):
                return round(value, 4) if value < 10 else round(value, 1)
            if isinstance(value, dict):
                return {k: rounded(v) for k, v in value.items()}
            return value

        return rounded(
            {
                "leads_per_min": self.leads_per_min,
                "mix": self.mix,
                "assumptions": asdict(self.assumptions),
                "channels": {name: asdict(c) for name, c in self.channels.items()},
                "fleet": {"hosts": self.hosts, "workers": self.workers, "cores": self.cores},
                "redis": self.redis,
                "postgres": self.postgres,
                "cost": self.cost,
                "notes": self.notes,
            }
        )


def _channel(
    settings: Settings, name: str, leads_per_min: float, given: Assumptions, sender_per_second: float | None
) -> ChannelPlan:
    channel = settings.channel(name)
    provider = channel.provider_names()[0]
    configured = settings.provider(provider)
    io_bound = channel.concurrency / (given.latency_ms / 1000) * 60
    worker_rate = min(given.core_leads_per_min, io_bound)
    per_second = leads_per_min / 60
    default = sender_for(name, _provider_type(settings, provider))
    mps = configured.rate_limit_per_sender or sender_per_second or default.per_second
    messages = leads_per_min * 60 * given.hours_per_day * 30
    price = configured.price_for(name) or DEFAULT_PRICES[name]
    return ChannelPlan(
        leads_per_min=leads_per_min,
        provider=provider,
        worker_leads_per_min=worker_rate,
        bound_by="cpu" if worker_rate == given.core_leads_per_min else "concurrency / latency",
        workers=math.ceil(leads_per_min / (worker_rate * given.utilization)) if leads_per_min else 0,
        cores=leads_per_min / (given.core_leads_per_min * given.utilization),
        requests_in_flight=per_second * given.latency_ms / 1000,
        sender=default.kind,
        sender_per_second=mps,
        senders=math.ceil(per_second / mps) if mps and leads_per_min else None,
        messages_per_month=messages,
        price=price,
        cost_per_month=messages * price,
    )


def _redis(leads_per_second: float, given: Assumptions) -> dict[str, Any]:
    cpu = leads_per_second * given.redis_cpu_us_per_lead / 1e6
    needed = max(1, math.ceil(cpu / given.utilization))
    cluster = needed > 1
    masters = max(3, needed) if cluster else 1
    return {
        "ops_per_s": leads_per_second * (given.redis_commands_per_lead + INGEST_COMMANDS_PER_LEAD),
        "cpu_cores": cpu,
        "masters_needed": needed,
        "cluster": cluster,
        "masters": masters,
        "replicas_per_master": 1,
        "nodes": masters * 2,
        "partitions": 2 ** math.ceil(math.log2(4 * masters)) if cluster else 1,
    }


def _postgres(
    leads_per_second: float, workers: int, settings: Settings, given: Assumptions
) -> dict[str, Any]:
    per_day = leads_per_second * 86_400 * given.hours_per_day / 24
    connections = workers * min(settings.database.worker_pool_size, settings.database.pool_size)
    return {
        "row_writes_per_s": leads_per_second * ROW_WRITES_PER_LEAD,
        "wal_mb_per_s": leads_per_second * given.postgres_wal_bytes_per_lead / 1e6,
        "connections": connections,
        "pgbouncer": connections > 200,
        "storage_gb_per_day": per_day * given.postgres_bytes_per_lead / 1e9,
        "storage_gb_retained": per_day * given.retention_days * given.postgres_bytes_per_lead / 1e9,
    }


def make_plan(
    settings: Settings,
    leads_per_min: float,
    mix: dict[str, float],
    given: Assumptions,
    sender_per_second: dict[str, float] | None = None,
) -> Plan:
    """The fleet, Redis, PostgreSQL and monthly cost that ``leads_per_min`` needs (module doc)."""
    overrides = sender_per_second or {}
    channels = {
        name: _channel(settings, name, leads_per_min * share, given, overrides.get(name))
        for name, share in mix.items()
    }
    cores = sum(c.cores for c in channels.values())
    workers = sum(c.workers for c in channels.values())
    hosts = max(1, math.ceil(cores / given.cores_per_host))
    per_second = leads_per_min / 60
    redis = _redis(per_second, given)
    postgres = _postgres(per_second, workers, settings, given)
    api = {name: c.cost_per_month for name, c in channels.items()}
    infrastructure = {
        "hosts": hosts * SERVER_MONTHLY,
        "redis": redis["nodes"] * REDIS_NODE_MONTHLY,
        "postgres": POSTGRES_MONTHLY,
    }
    cost = {
        "currency": currency(settings),
        "api": {**api, "total": sum(api.values())},
        "infrastructure": {**infrastructure, "total": sum(infrastructure.values())},
        "total": sum(api.values()) + sum(infrastructure.values()),
    }
    plan = Plan(leads_per_min, mix, given, channels, hosts, workers, cores, redis, postgres, cost)
    plan.notes = _notes(plan, settings)
    return plan


def _provider_type(settings: Settings, provider: str) -> str:
    return settings.provider(provider).type or provider


def _notes(plan: Plan, settings: Settings) -> list[str]:
    notes = [f"hosts have {plan.assumptions.cores_per_host} cores; run one more for a host failure"]
    in_flight: dict[str, float] = {}
    for name, c in plan.channels.items():
        per_second = c.leads_per_min / 60
        limit = settings.provider(c.provider).rate_limit
        if limit and per_second > limit:
            notes.append(
                f"{name}: {per_second:,.0f}/s is over providers.{c.provider}.rate_limit ({limit:,.0f}/s)"
            )
        if _provider_type(settings, c.provider) == "twilio":
            in_flight[c.provider] = in_flight.get(c.provider, 0.0) + c.requests_in_flight
        if name == "whatsapp" and c.leads_per_min * 60 * 24 > WHATSAPP_UNLIMITED_TIER:
            notes.append("whatsapp: more than 100,000 people a day needs WhatsApp's unlimited messaging tier")
        if c.senders is not None and c.senders > 1:
            notes.append(f"{name}: {sender_for(name, _provider_type(settings, c.provider)).source}")
    for provider, requests in in_flight.items():
        if requests > TWILIO_CONCURRENCY:
            accounts = math.ceil(requests / TWILIO_CONCURRENCY)
            notes.append(
                f"{provider}: {requests:,.0f} requests in flight; a Twilio account allows "
                f"{TWILIO_CONCURRENCY} by default: have it raised or spread over {accounts} subaccounts"
            )
    if not plan.redis["cluster"]:
        notes.append(
            "redis: one master carries the load; for automatic failover run a 3-master Redis Cluster "
            "with a replica each (redis.cluster: true, redis.partitions: 16): leadctl does not use Sentinel"
        )
    if plan.postgres["pgbouncer"]:
        notes.append(
            f"postgres: {plan.postgres['connections']:,} connections: put PgBouncer (transaction pooling, "
            "database.pgbouncer: true) in front of PostgreSQL"
        )
    if plan.postgres["row_writes_per_s"] > 20_000:
        notes.append("postgres: over 20,000 row writes/s needs a large dedicated server (16+ cores, NVMe)")
    return notes


def phases(settings: Settings, mix: dict[str, float], given: Assumptions) -> dict[str, dict[str, Any]]:
    """The design's phase table, computed: what each phase's rate needs and costs a month."""
    table: dict[str, dict[str, Any]] = {}
    for name, rate in DESIGN_PHASES.items():
        plan = make_plan(settings, rate, mix, given)
        table[name] = {
            "leads_per_min": rate,
            "hosts": plan.hosts,
            "workers": plan.workers,
            "redis_masters": plan.redis["masters"],
            "postgres_row_writes_per_s": round(plan.postgres["row_writes_per_s"]),
            "api_per_month": round(plan.cost["api"]["total"]),
            "infrastructure_per_month": round(plan.cost["infrastructure"]["total"]),
            "total_per_month": round(plan.cost["total"]),
        }
    return table


def parse_sender_rates(text: str | None) -> dict[str, float]:
    """'sms=10,whatsapp=50' -> messages per second one sender may send, per channel."""
    rates: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = (x.strip() for x in part.partition("="))
        if name not in CHANNELS:
            raise ValueError(f"--sender-mps: {name!r} is not a channel ({', '.join(CHANNELS)})")
        try:
            rates[name] = float(value)
        except ValueError:
            raise ValueError(f"--sender-mps: {part.strip()!r} is not channel=messages per second") from None
        if rates[name] <= 0:
            raise ValueError(f"--sender-mps: {name} must be more than 0")
    return rates


def capacity_plan(
    settings: Settings,
    leads_per_min: float,
    mix: dict[str, float],
    sender_per_second: dict[str, float],
    *,
    latency_ms: float,
    cores_per_host: int,
    hours_per_day: float,
    retention_days: int,
) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """`leadctl plan`: the plan for ``leads_per_min``, and the design's phases, assuming the last
    `leadctl bench dispatch` saved under ``data_dir`` (else the defaults)."""
    given = assumptions(
        load_result(settings.data_dir),
        latency_ms=latency_ms,
        cores_per_host=cores_per_host,
        hours_per_day=hours_per_day,
        retention_days=retention_days,
    )
    return make_plan(settings, leads_per_min, mix, given, sender_per_second), phases(settings, mix, given)
