"""Pick a provider adapter by name and build the one HTTP session a worker process shares."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.providers.base import Provider
from leadctl.providers.log import LogProvider
from leadctl.providers.sendgrid import SendGridProvider
from leadctl.providers.smtp import SmtpProvider
from leadctl.providers.twilio import TwilioProvider
from leadctl.providers.webhook import WebhookProvider
from leadctl.providers.whatsapp_cloud import WhatsAppCloudProvider
from leadctl.providers.zenvia import ZenviaProvider

_Adapter = Callable[[str, ProviderSettings, aiohttp.ClientSession], Provider]
ADAPTERS: dict[str, _Adapter] = {
    "log": LogProvider,
    "sendgrid": SendGridProvider,
    "smtp": SmtpProvider,
    "twilio": TwilioProvider,
    "webhook": WebhookProvider,
    "whatsapp_cloud": WhatsAppCloudProvider,
    "zenvia": ZenviaProvider,
}


def create_provider(name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> Provider:
    """The adapter named by ``settings.type`` (or by the provider's own name when no type is set)."""
    kind = settings.type or name
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"provider {name!r}: unknown type {kind!r} (known: {known})")
    return adapter(name, settings, session)


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
