"""Pick a provider adapter by name and build the one HTTP session a worker process shares."""

from __future__ import annotations

import importlib

import aiohttp

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.providers.base import Provider

ADAPTERS: dict[str, str] = {
    "log": "leadctl.providers.log:LogProvider",
    "sendgrid": "leadctl.providers.sendgrid:SendGridProvider",
    "smtp": "leadctl.providers.smtp:SmtpProvider",
    "twilio": "leadctl.providers.twilio:TwilioProvider",
    "webhook": "leadctl.providers.webhook:WebhookProvider",
    "whatsapp_cloud": "leadctl.providers.whatsapp_cloud:WhatsAppCloudProvider",
    "zenvia": "leadctl.providers.zenvia:ZenviaProvider",
}
"""Adapter classes by type, imported when first used: a worker loads its own provider's code
(and its libraries: aiosmtplib, email) and not the others', which keeps every process smaller."""


def create_provider(name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> Provider:
    """The adapter named by ``settings.type`` (or by the provider's own name when no type is set)."""
    kind = settings.type or name
    where = ADAPTERS.get(kind)
    if where is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"provider {name!r}: unknown type {kind!r} (known: {known})")
    module, _, adapter = where.partition(":")
    return getattr(importlib.import_module(module), adapter)(name, settings, session)


def make_session(limit: int) -> aiohttp.ClientSession:
    """One pooled keep-alive session for a worker process; call it inside the running event loop.

    ``limit`` caps open connections (set it to the process's send concurrency). Timeouts are per
    provider, so the session has none of its own; cookies are never kept.
    """
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )
