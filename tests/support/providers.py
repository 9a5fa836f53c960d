"""Helpers for provider tests: build settings, send through a real adapter, collect the outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from leadctl.config import ProviderSettings
from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from leadctl.providers.base import Message, Provider, ProviderError, SendResult
from leadctl.providers.registry import create_provider, make_session

Outcome = SendResult | ProviderError

HANG_S = 60.0
"""How long the sandbox leaves a request unanswered in the read-timeout tests: longer than any timeout
in play, so a call that ends in doubt before it was cut by the adapter's own read timeout."""

SENDER = "+15005550006"
"""The sandbox's Twilio test sender."""


def provider_settings(kind: str, **raw: Any) -> ProviderSettings:
    """Settings for an adapter of type ``kind`` with short timeouts (overridable)."""
    return ProviderSettings.model_validate(
        {"type": kind, "connect_timeout_ms": 1000, "read_timeout_ms": 5000, **raw}
    )


def twilio_settings(base_url: str, **overrides: Any) -> ProviderSettings:
    """The Twilio adapter on the sandbox at ``base_url``, with the sandbox's credentials."""
    raw = {"base_url": base_url, "from": SENDER, "account_sid": SANDBOX_ACCOUNT_SID}
    return provider_settings("twilio", **{**raw, "auth_token": SANDBOX_AUTH_TOKEN, **overrides})


def message(
    to: str,
    channel: str,
    lead_id: int = 1,
    body: str = "Olá Ana! Oferta & desconto 100%",
    **extra: Any,
) -> Message:
    return Message(lead_id=lead_id, channel=channel, to=to, body=body, **extra)


def run_with(
    settings: ProviderSettings, use: Callable[[Provider], Awaitable[list[Outcome]]]
) -> list[Outcome]:
    """Build the adapter inside a fresh event loop and session, run ``use`` with it."""

    async def go() -> list[Outcome]:
        async with make_session(10) as session:
            provider = create_provider("under-test", settings, session)
            try:
                return await use(provider)
            finally:
                close = getattr(provider, "close", None)
                if close is not None:
                    await close()

    return asyncio.run(go())


def send(settings: ProviderSettings, *messages: Message) -> list[Outcome]:
    """Send each message in turn with one adapter; failures are returned, not raised."""

    async def each(provider: Provider) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for item in messages:
            try:
                outcomes.append(await provider.send(item))
            except ProviderError as exc:
                outcomes.append(exc)
        return outcomes

    return run_with(settings, each)


def failure(settings: ProviderSettings, item: Message) -> ProviderError:
    (outcome,) = send(settings, item)
    assert isinstance(outcome, ProviderError), outcome
    return outcome


def success(settings: ProviderSettings, item: Message) -> SendResult:
    (outcome,) = send(settings, item)
    assert isinstance(outcome, SendResult), outcome
    return outcome
