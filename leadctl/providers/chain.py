"""A channel's providers in failover order, each behind its shared rate limit and its circuit breaker.

``channels.<channel>.providers: [zenvia, twilio]`` (or the single ``provider``). A message goes through
the first provider whose breaker lets it (closed, or due its half-open probe) and which is not paused
by a 429 — the last provider is waited for rather than skipped when paused. A transient error moves
the message on to the next provider. An ``in_doubt`` error never does (the first provider may have
sent it) and neither does a permanent one (the message is at fault, not the provider).

For the breaker, a 5xx, a refused connection or an ``in_doubt`` is a failure; an acceptance, a
permanent refusal or a rate-limit answer is a success (the provider is up). An error carrying
``retry_after`` (429, Retry-After) pauses that provider for every worker (leadctl.providers.ratelimit).

The provider that sent is ``SendResult.details["provider"]``. A caller that keeps records (the
worker) passes a ``Call``: it learns which provider was asked last, whether a request is under way
(a send cancelled then may have reached the provider; one cancelled while waiting for a token did
not), and how long each request took, without the wait for a token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import aiohttp
import redis.asyncio as aioredis

from leadctl.config import Settings
from leadctl.providers.base import AUTH_ERROR, ErrorKind, Message, Provider, ProviderError, SendResult
from leadctl.providers.breaker import CircuitBreaker
from leadctl.providers.ratelimit import Throttle, sender_of, throttle_for
from leadctl.providers.registry import create_provider

CIRCUIT_OPEN = "circuit_open"
CIRCUIT_POLL_S = 1.0
"""A send refused by open circuits asks them again at least this often (a check in this process): the
probe another send took may have closed one."""
"""The ``code`` of the transient error raised when every provider's breaker is open."""


@dataclass(slots=True)
class Route:
    """One provider of a chain with what guards it."""

    provider: Provider
    throttle: Throttle
    breaker: CircuitBreaker
    sender: str | None = None


@dataclass(slots=True)
class Call:
    """What one message's sends through a chain did (it may span the worker's attempts).

    provider: the provider asked last (None: no request went out).
    in_request: that provider's request is under way.
    requests: (provider, seconds) of each request made.
    """

    provider: str | None = None
    in_request: bool = False
    requests: list[tuple[str, float]] = field(default_factory=list)


class ProviderChain:
    """A Provider that sends through the first usable of its routes (see module doc)."""

    def __init__(self, routes: list[Route]) -> None:
        if not routes:
            raise ValueError("a ProviderChain needs at least one route")
        self.routes = routes
        self.name = ",".join(route.provider.name for route in routes)

    async def send(self, message: Message, call: Call | None = None) -> SendResult:
        """Send through the first usable provider, falling over on transient errors (module doc)."""
        call = Call() if call is None else call
        error: ProviderError | None = None
        last = len(self.routes) - 1
        for index, route in enumerate(self.routes):
            if index < last and route.throttle.paused_for() > 0:
                continue
            if not route.breaker.allow():
                continue
            try:
                await route.throttle.acquire(sender=route.sender)
                result = await self._request(route.provider, message, call)
            except ProviderError as exc:
                call.in_request = False
                await self._note_error(route, exc)
                if exc.kind != ErrorKind.TRANSIENT:
                    raise
                error = exc
                continue
            call.in_request = False
            route.breaker.record_success()
            return replace(result, details={**(result.details or {}), "provider": route.provider.name})
        if error is not None:
            raise error
        closed_in = min(max(route.breaker.retry_in(), route.throttle.paused_for()) for route in self.routes)
        raise ProviderError(
            ErrorKind.TRANSIENT,
            f"no provider available ({self.name}): circuits open",
            code=CIRCUIT_OPEN,
            retry_after=min(closed_in, CIRCUIT_POLL_S),
        )

    def packing_route(self) -> Route | None:
        """The route to hand whole batches to: a lone provider that packs many messages per request
        (``send_many``, e.g. SendGrid). With several providers, sends stay one by one so that
        failover keeps working message by message."""
        if len(self.routes) == 1 and hasattr(self.routes[0].provider, "send_many"):
            return self.routes[0]
        return None

    @staticmethod
    async def _request(provider: Provider, message: Message, call: Call) -> SendResult:
        call.provider, call.in_request = provider.name, True
        began = time.perf_counter()
        try:
            return await provider.send(message)
        finally:
            call.requests.append((provider.name, time.perf_counter() - began))

    @staticmethod
    async def _note_error(route: Route, exc: ProviderError) -> None:
        if exc.code == AUTH_ERROR:
            return
        if exc.kind == ErrorKind.TRANSIENT and exc.retry_after:
            route.breaker.record_success()
            await route.throttle.pause(exc.retry_after)
        elif exc.kind == ErrorKind.PERMANENT:
            route.breaker.record_success()
        else:
            route.breaker.record_failure()


def build_chain(
    settings: Settings, channel: str, session: aiohttp.ClientSession, client: aioredis.Redis
) -> ProviderChain:
    """The channel's providers as configured, sharing the worker's HTTP session and Redis client."""
    routes = []
    for name in settings.channel(channel).provider_names():
        provider_settings = settings.provider(name)
        routes.append(
            Route(
                create_provider(name, provider_settings, session),
                throttle_for(client, settings.namespace, name, provider_settings),
                CircuitBreaker(name, provider_settings.breaker_failures, provider_settings.breaker_reset_s),
                sender_of(provider_settings),
            )
        )
    return ProviderChain(routes)
