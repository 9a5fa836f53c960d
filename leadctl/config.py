"""Configuration: a YAML file with ${ENV} interpolation, then LEADCTL_* overrides, into one typed Settings.

Where the file comes from: ``--config PATH``, else ``$LEADCTL_CONFIG``, else ``./leadctl.yaml``, else
built-in defaults. ``LEADCTL_REDIS_URL``, ``LEADCTL_DATABASE_URL``, ``LEADCTL_NAMESPACE``,
``LEADCTL_DEFAULT_REGION`` and ``LEADCTL_DATA_DIR`` override their keys; any other key is
``LEADCTL_SECTION__KEY`` (``LEADCTL_PROVIDERS__TWILIO__AUTH_TOKEN`` -> ``providers.twilio.auth_token``).

This is the bottom layer: it imports nothing of leadctl but its errors. The values a setting holds
in a small language of its own (a send window's ``allow`` and ``days``, a frequency cap, a time
zone name) are parsed here, once, and leadctl.compliance builds on these parsers.

"Batch" names one thing: ``leadctl batch``, the scheduled (cron) run, configured in ``batch``. A
``batch_size`` elsewhere is how many items one step takes at a time (``worker.batch_size``: entries
per stream read; ``ingest.batch_size``: rows per writer transaction; ``webhooks.batch_size``: events
per write).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadctl.errors import ConfigError

CHANNELS: tuple[str, ...] = ("sms", "whatsapp", "email")
Channel = Literal["sms", "whatsapp", "email"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAMED_ENV = {
    "LEADCTL_REDIS_URL": ("redis", "url"),
    "LEADCTL_DATABASE_URL": ("database", "url"),
    "LEADCTL_NAMESPACE": ("namespace",),
    "LEADCTL_DEFAULT_REGION": ("default_region",),
    "LEADCTL_DATA_DIR": ("data_dir",),
}


# --- Values parsed from the configuration (leadctl.compliance builds on them) ---

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^\s*([01]?\d|2[0-4]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")


def parse_allow(text: str) -> tuple[int, int]:
    """'09:00-20:00' -> (540, 1200), minutes after midnight; ValueError when malformed or empty."""
    found = _HHMM.match(text)
    if not found:
        raise ValueError(f"allow must look like 09:00-20:00, not {text!r}")
    start = int(found.group(1)) * 60 + int(found.group(2))
    end = int(found.group(3)) * 60 + int(found.group(4))
    if not 0 <= start < end <= 24 * 60:
        raise ValueError(f"allow {text!r}: the start must come before the end, within one day")
    return start, end


def parse_days(text: str) -> frozenset[int]:
    """'mon-sat', 'mon,wed,fri', 'all' or 'mon-fri,sun' -> weekday numbers (Monday is 0)."""
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if part in ("all", "every", "daily"):
            days.update(range(7))
            continue
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"days must be like mon-sat or mon,wed,fri, not {text!r}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    if not days:
        raise ValueError("days names no day")
    return frozenset(days)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone called ``name``, or None when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
}
_CAP = re.compile(r"^(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day|week|month|s|m|h|d|w)s?$")


@dataclass(frozen=True, slots=True)
class Cap:
    """A frequency cap: ``limit`` messages per ``window_s`` seconds."""

    limit: int
    window_s: int


def parse_cap(text: str) -> Cap:
    """'3/week', '2/day', '10/30d', '5/12h' -> Cap; ValueError otherwise (a month is 30 days)."""
    found = _CAP.match(text.strip().lower())
    if found and int(found.group(1)) >= 1 and int(found.group(2) or 1) >= 1:
        return Cap(int(found.group(1)), int(found.group(2) or 1) * _SECONDS[found.group(3)])
    raise ValueError(f"cap must look like 3/week, 2/day or 10/30d, not {text!r}")


DEFAULT_OPTOUT_KEYWORDS: tuple[str, ...] = (
    # English (the carriers' and Twilio's standard set)
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "REVOKE",
    # Portuguese
    "SAIR",
    "PARE",
    "PARAR",
    "CANCELAR",
    "DESCADASTRAR",
    "DESCADASTRE",
    "DESINSCREVER",
    "REMOVER",
    "NAO QUERO",
)
"""``optout.keywords`` when the configuration names none."""


# --- The settings ---


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _blank_is_none(value: str | None) -> str | None:
    return value or None


class RedisSettings(_Section):
    url: str | None = None
    max_connections: int = Field(100, ge=1)
    socket_timeout_ms: int = Field(5000, ge=100)
    cluster: bool = False
    """Redis Cluster: ``url`` names any one node (or use ``nodes``); implied by ``nodes``."""
    nodes: list[str] = Field(default_factory=list)
    """Cluster nodes to start from, ``host:port`` each; ``url`` defaults to the first."""
    partitions: int = Field(1, ge=1, le=1024)
    """Streams per channel (a lead goes to stream ``lead id % partitions``), spread over the cluster's
    slots; every host must use the same value. 1 keeps the single stream ``{ns:channel}:stream``."""

    _url = field_validator("url")(_blank_is_none)

    @field_validator("nodes")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for node in value:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{node!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _nodes_mean_cluster(self) -> RedisSettings:
        if self.nodes:
            self.cluster = True
            if self.url is None:
                self.url = f"redis://{self.nodes[0]}"
        if self.cluster and self.url is None:
            raise ValueError("a cluster needs redis.url or redis.nodes (leadctl embeds only a single Redis)")
        return self


class DatabaseSettings(_Section):
    url: str | None = None
    pool_size: int = Field(50, ge=1)
    connect_timeout_ms: int = Field(5000, ge=100)
    statement_timeout_ms: int = Field(60000, ge=0)
    worker_pool_size: int = Field(4, ge=1)
    """Connections each worker process keeps (at most ``pool_size``); the fleet opens
    hosts x workers x this many, which PostgreSQL's max_connections (or PgBouncer) must allow."""
    pgbouncer: bool = False
    """Safe behind PgBouncer in transaction pooling: no prepared statements and no session state,
    so no ``SET statement_timeout`` either: set it on the role (``ALTER ROLE ... SET statement_timeout``)."""

    _url = field_validator("url")(_blank_is_none)


class EmailTemplate(_Section):
    subject: str = "{{ name }}, uma novidade para você"
    text: str = "Olá {{ name }}! Temos uma oferta especial para você."
    html: str | None = None


class ChannelSettings(_Section):
    provider: str = "log"
    providers: list[str] | None = Field(None, min_length=1)
    """Failover order (``[zenvia, twilio]``); when set it replaces ``provider``."""
    template: str = "Olá {{ name }}! Temos uma oferta especial para você."
    email: EmailTemplate = Field(default_factory=EmailTemplate)
    workers: int = Field(20, ge=1)
    concurrency: int = Field(50, ge=1)
    max_attempts: int = Field(5, ge=1)
    retry_initial_ms: int = Field(500, ge=0)
    retry_max_ms: int = Field(30_000, ge=0)

    def provider_names(self) -> list[str]:
        """The providers to send through, in failover order."""
        return self.providers or [self.provider]


class CampaignTemplate(_Section):
    """One campaign's own templates for one channel; a key left out falls back to the channel's.

    ``template`` is the sms / whatsapp body; ``subject``, ``text`` and ``html`` are email's.
    """

    template: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None


class ProviderSettings(BaseModel):
    """One provider's knobs; provider-specific keys (account_sid, token, ...) are kept as extras."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str | None = None
    base_url: str | None = None
    from_: str | None = Field(None, alias="from")
    connect_timeout_ms: int = Field(5000, ge=1)
    read_timeout_ms: int = Field(10000, ge=1)
    rate_limit: float | None = Field(None, gt=0)
    rate_limit_per_sender: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_s: float = Field(30.0, gt=0)
    price: float | dict[Channel, float] | None = None
    """Price of one message, or per channel (``{sms: 0.0079, whatsapp: 0.005}``), for `stats` spend."""
    currency: str = "USD"

    def extra(self, key: str, default: Any = None) -> Any:
        """A provider-specific key such as ``account_sid``."""
        return (self.model_extra or {}).get(key, default)

    def price_for(self, channel: str) -> float:
        """What one message on ``channel`` costs (0 when no price is configured)."""
        if isinstance(self.price, dict):
            return self.price.get(channel, 0.0)
        return self.price or 0.0


class WorkerSettings(_Section):
    batch_size: int = Field(1000, ge=1)
    visibility_timeout_s: float = Field(30.0, gt=0)
    block_ms: int = Field(1000, ge=1)
    shutdown_grace_s: float = Field(30.0, ge=0)
    metrics: bool = True
    """Publish counters (rates, latency, retries, spend) to Redis for `leadctl stats`."""


class BatchSettings(_Section):
    """`leadctl batch`, the scheduled (cron) run; how it reads and sends is ``worker`` and ``channels``."""

    max_seconds: int = Field(14 * 60, ge=1)
    """The run's time budget: it stops then and leaves the rest queued (14 minutes: it ends before
    the next 15-minute run)."""


class IngestSettings(_Section):
    batch_size: int = Field(20_000, ge=1)
    """Rows per parse batch and per writer transaction: 20,000 ingests a million leads 5-15% faster
    than 5,000 (a quarter of the commits and per-batch statements) in 200 MB instead of 165."""
    columns: dict[str, str] = Field(default_factory=dict)


class AlertSettings(_Section):
    queue_size: int = 10_000
    error_rate: float = 0.05
    stalled_s: int = 300
    dead_letters: int = Field(0, ge=0)
    """Alert when more leads than this went dead (dead letters) in the last 5 minutes."""
    webhook_url: str | None = None


class QuietHours(_Section):
    """When messages may go out, in the lead's local time (leadctl.compliance.windows).

    The defaults are Brazil's marketing hours; the US TCPA window is ``allow: "08:00-21:00"``,
    ``days: mon-sun``.
    """

    allow: str = "09:00-20:00"
    days: str = "mon-sat"

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: str) -> str:
        parse_allow(value)
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value


class CampaignCompliance(_Section):
    """One campaign's own rules: send windows per channel, and lead fields that prove consent."""

    quiet_hours: dict[Channel, QuietHours] = Field(default_factory=dict)
    require_consent: list[str] = Field(default_factory=list)
    """Lead fields (``consent_at``, ``consent_source``) that must be filled, else ingest rejects the lead."""


class ComplianceSettings(_Section):
    """Quiet hours, frequency caps and per-campaign consent (see the README's Compliance section)."""

    quiet_hours: dict[Channel, QuietHours] = Field(default_factory=dict)
    """Send windows per channel; a channel left out has none."""
    timezone_field: str = "timezone"
    """The lead field holding its IANA time zone (else the phone number's, else default_timezone)."""
    default_timezone: str = "America/Sao_Paulo"
    caps: dict[Channel, str] = Field(default_factory=dict)
    """At most N messages per contact per channel in a rolling window: ``{sms: "3/week"}``."""
    cap_action: Literal["defer", "skip"] = "defer"
    caps_scope: str | None = None
    """Namespaces sharing a scope share their caps (default: this namespace alone)."""
    campaigns: dict[str, CampaignCompliance] = Field(default_factory=dict)

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if zone(value) is None:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as America/Sao_Paulo)")
        return value

    @field_validator("caps")
    @classmethod
    def _caps(cls, value: dict[str, str]) -> dict[str, str]:
        for cap in value.values():
            parse_cap(cap)
        return value

    @field_validator("caps_scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", value):
            raise ValueError("must be letters, digits, '_', '.' or '-'")
        return value

    def window_for(self, channel: str, campaign: str) -> QuietHours | None:
        """The campaign's window on ``channel``, else the channel's, else None (no window)."""
        own = self.campaigns.get(campaign)
        if own is not None and channel in own.quiet_hours:
            return own.quiet_hours[channel]
        return self.quiet_hours.get(channel)

    def consent(self) -> dict[str, tuple[str, ...]]:
        """Campaign -> the lead fields its leads must fill (campaigns requiring none left out)."""
        return {name: tuple(c.require_consent) for name, c in self.campaigns.items() if c.require_consent}


class OptOutSettings(_Section):
    """Inbound replies that suppress their sender (leadctl.compliance.optout)."""

    keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_OPTOUT_KEYWORDS))
    scope: Literal["channel", "all"] = "channel"
    """Suppress the contact on the channel it replied on, or on every channel."""


class WebhookSettings(_Section):
    """`leadctl webhooks serve`: delivery receipts and inbound replies from the providers."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535)
    public_url: str | None = None
    """The base URL providers call (behind a proxy): signatures are checked against it."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    flush_ms: int = Field(100, ge=1)
    batch_size: int = Field(500, ge=1)

    _public_url = field_validator("public_url")(_blank_is_none)


def _default_channels() -> dict[str, ChannelSettings]:
    return {name: ChannelSettings() for name in CHANNELS}


class Settings(_Section):
    namespace: str = "leadctl"
    default_region: str = "BR"
    data_dir: Path = Path(".leadctl")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    channels: dict[str, ChannelSettings] = Field(default_factory=_default_channels)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    campaigns: dict[str, dict[Channel, CampaignTemplate]] = Field(default_factory=dict)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings)
    optout: OptOutSettings = Field(default_factory=OptOutSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("namespace")
    @classmethod
    def _namespace_is_identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", value):
            raise ValueError("must be lowercase letters, digits and _ (it names a PostgreSQL schema)")
        return value

    @field_validator("default_region")
    @classmethod
    def _region_upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: dict[str, ChannelSettings]) -> dict[str, ChannelSettings]:
        unknown = set(value) - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown channel {sorted(unknown)[0]!r} (known: {', '.join(CHANNELS)})")
        return {**_default_channels(), **value}

    def channel(self, name: str) -> ChannelSettings:
        return self.channels[name]

    def provider(self, name: str) -> ProviderSettings:
        return self.providers.get(name) or ProviderSettings()


def _interpolate(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a YAML document."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"config key {where or '?'} uses ${{{name}}}, which is not set")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, environ, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, where) for v in value]
    return value


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _env_value(raw: str) -> Any:
    """Lists and mappings may be given inline (``[zenvia, twilio]``); everything else stays a string."""
    if raw.strip().startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment value {raw!r} is not valid YAML: {exc}") from None
    return raw


def _apply_env(tree: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if name in _NAMED_ENV:
            _set_path(tree, _NAMED_ENV[name], raw)
        elif name.startswith("LEADCTL_") and "__" in name:
            path = tuple(part.lower() for part in name[len("LEADCTL_") :].split("__"))
            if all(path):
                _set_path(tree, path, _env_value(raw))


def config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read, or None for built-in defaults."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    if environ.get("LEADCTL_CONFIG"):
        path = Path(environ["LEADCTL_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"config file {path} (from LEADCTL_CONFIG) does not exist")
        return path
    local = Path("leadctl.yaml")
    return local if local.is_file() else None


REMOVED_KEYS: dict[tuple[str, ...], str] = {
    ("batch", "size"): "use worker.batch_size (the stream entries a worker reads at a time)",
    ("batch", "interval_s"): (
        "workers wait on the stream instead of polling (worker.block_ms); "
        "repeat `leadctl batch` with cron or --every"
    ),
    ("batch", "parallel"): "use channels.<channel>.workers (a run drains its channels in parallel)",
}
"""Keys that once were settings but did nothing: what to use instead."""


def _describe(error: ValidationError) -> str:
    """The first problem as ``key: message``; a removed key says what replaced it."""
    problems = error.errors()
    for problem in problems:
        path = tuple(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden" and path in REMOVED_KEYS:
            return f"{'.'.join(path)} was removed: {REMOVED_KEYS[path]}"
    first = problems[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from ``path`` (see module doc for the search order) and the environment."""
    environ = os.environ if environ is None else environ
    source = config_path(path, environ)
    tree: dict[str, Any] = {}
    if source is not None:
        try:
            loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {source}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {source} must hold a mapping of keys")
        tree = _interpolate(loaded, environ)
    _apply_env(tree, environ)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        origin = f"config file {source}" if source else "configuration"
        raise ConfigError(f"{origin}: {_describe(exc)}") from None
