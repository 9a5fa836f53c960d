"""The webhook server: verified provider callbacks in, batched PostgreSQL writes out.

Routes (what users paste into the providers' consoles):

- ``POST /webhooks/twilio/status`` and ``POST /webhooks/twilio/inbound`` (Twilio Messaging)
- ``GET|POST /webhooks/whatsapp`` (Meta: the GET answers the subscription handshake)
- ``POST /webhooks/sendgrid`` (signed Event Webhook) and ``POST /webhooks/zenvia`` (subscriptions)
- ``GET /healthz``

A request whose signature is missing or wrong gets 403 and changes nothing; a body over
``webhooks.max_body_bytes`` gets 413 before it is read. A verified request's events join a queue
that one writer flushes every ``webhooks.flush_ms`` (or ``webhooks.batch_size`` events) in one
statement (leadctl.store.receipts). Receipts are answered 200 as soon as they are queued (providers
demote slow webhooks): a failed write is retried, a graceful stop writes the queue first, and only
a crash loses the last ``flush_ms`` of them. A request carrying an opt-out is answered once it is
committed, or 503 so the provider sends it again: an opt-out is never lost. While the queue is full
(PostgreSQL down) every request gets 503. Signatures are checked against ``webhooks.public_url`` +
the request path when set (behind a proxy), else against the URL the request reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg_pool import AsyncConnectionPool

from leadctl.compliance.optout import OptOutKeywords
from leadctl.config import Settings
from leadctl.connections import Endpoints, open_async_pool, open_postgres
from leadctl.errors import ConfigError
from leadctl.retry import Backoff, RetryPolicy
from leadctl.send.eventloop import stop_on_signals
from leadctl.store.receipts import RECONCILE_WINDOW_S, Event, OptOut, ReceiptStore
from leadctl.webhooks import events as parse
from leadctl.webhooks import signatures

log = logging.getLogger("leadctl.webhooks")

RECONCILE_EVERY_S = 2.0
WRITE_RETRIES = RetryPolicy(
    initial_s=0.1,
    max_s=5.0,
    attempts=None,
    jitter=False,
    retryable=lambda exc: isinstance(exc, psycopg.Error | OSError),
)
"""A batch PostgreSQL did not take is written again: 0.1 s, doubling to 5 s, until the server stops."""
ANSWER_TIMEOUT_S = 10.0
_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass
class Secrets:
    """What each provider's webhooks are verified with, from ``providers.*`` (every entry of a type)."""

    twilio: list[str] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)
    meta_verify: list[str] = field(default_factory=list)
    sendgrid: list[ec.EllipticCurvePublicKey] = field(default_factory=list)
    zenvia: list[tuple[str, str]] = field(default_factory=list)
    """(header, token) pairs."""

    @classmethod
    def of(cls, settings: Settings) -> Secrets:
        secrets = cls()
        for name, provider in settings.providers.items():
            kind = provider.type or name
            extra = provider.extra
            if kind == "twilio" and extra("auth_token"):
                secrets.twilio.append(str(extra("auth_token")))
            elif kind == "whatsapp_cloud":
                secrets.meta += [str(extra("app_secret"))] if extra("app_secret") else []
                secrets.meta_verify += [str(extra("verify_token"))] if extra("verify_token") else []
            elif kind == "sendgrid" and extra("webhook_public_key"):
                try:
                    secrets.sendgrid.append(signatures.sendgrid_public_key(str(extra("webhook_public_key"))))
                except ValueError as exc:
                    raise ConfigError(f"providers.{name}.webhook_public_key: {exc}") from None
            elif kind == "zenvia" and extra("webhook_token"):
                header = str(extra("webhook_header") or signatures.ZENVIA_HEADER)
                secrets.zenvia.append((header, str(extra("webhook_token"))))
        return secrets

    def configured(self) -> list[str]:
        """The providers whose webhooks can be verified."""
        pairs = [("twilio", self.twilio), ("whatsapp", self.meta), ("sendgrid", self.sendgrid)]
        return [name for name, found in [*pairs, ("zenvia", self.zenvia)] if found]


class Overloaded(Exception):
    """The write queue is full (PostgreSQL is down or too slow): the provider should retry later."""


class Batcher:
    """Events of many requests written in one statement per flush; unknown receipts retried a while.

    ``submit`` queues events; with ``wait`` it returns once they are committed (opt-outs: never
    lost), else at once (receipts: written within ``flush_ms``; a graceful stop writes those queued
    first). A batch that fails is retried with backoff; while the queue is full, ``submit`` raises
    Overloaded.
    """

    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.store = ReceiptStore(settings.namespace)
        self.flush_s = settings.webhooks.flush_ms / 1000
        self.batch_size = settings.webhooks.batch_size
        self.max_waiting = settings.webhooks.batch_size * 100
        self.suppress_all = settings.optout.scope == "all"
        self.counts: Counter[str] = Counter()
        self._queue: asyncio.Queue[tuple[list[Event], asyncio.Future[None] | None] | None] = asyncio.Queue()
        self._waiting = 0
        self._closing = False
        self._reconcile_until = 0.0
        self._reconciled = 0.0

    def waiting(self) -> int:
        """Events queued, not yet written."""
        return self._waiting

    async def submit(self, events: list[Event], wait: bool) -> None:
        """Queue ``events``; with ``wait``, return once they are committed (raises when they were not)."""
        if not events:
            return
        if self._waiting >= self.max_waiting:
            raise Overloaded(f"{self._waiting} events wait to be written")
        future: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if wait else None
        self._waiting += len(events)
        self._queue.put_nowait((events, future))
        if future is not None:
            await future

    def close(self) -> None:
        """Write what is queued, then stop ``run``."""
        self._closing = True
        self._queue.put_nowait(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._closing and self._queue.empty()):
            try:
                first = await asyncio.wait_for(self._queue.get(), RECONCILE_EVERY_S)
            except TimeoutError:
                await self._reconcile()
                continue
            if first is None:
                continue
            items, count, deadline = [first], len(first[0]), loop.time() + self.flush_s
            while count < self.batch_size and (left := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
                if item is None:
                    break
                items.append(item)
                count += len(item[0])
            await self._write(items)
            if loop.time() - self._reconciled >= RECONCILE_EVERY_S:
                await self._reconcile()

    @staticmethod
    def _unrecorded(count: int, exc: BaseException, pause: float) -> None:
        log.warning("webhooks: could not record %d events (%s); retrying in %.1fs", count, exc, pause)

    async def _write(self, items: list[tuple[list[Event], asyncio.Future[None] | None]]) -> None:
        batch = [event for events, _ in items for event in events]
        backoff = Backoff(
            WRITE_RETRIES, on_failure=lambda exc, pause: self._unrecorded(len(batch), exc, pause)
        )
        while True:
            try:
                async with self.pool.connection() as conn:
                    applied = await self.store.apply(conn, batch, self.suppress_all)
                break
            except Exception as exc:
                if not backoff.retries(exc):
                    raise
                for _, future in items:  # their requests answer 503; the providers send them again
                    if future is not None and not future.done():
                        future.set_exception(exc)
                if self._closing:
                    log.warning("webhooks: stopping with %d events not recorded (%s)", len(batch), exc)
                    self._waiting -= len(batch)
                    return
                await backoff.wait(exc)
        self._waiting -= len(batch)
        self.counts.update(
            batches=1,
            events=len(batch),
            matched=applied.matched,
            unknown=applied.unknown,
            suppressed=applied.suppressed,
        )
        if applied.unknown:
            self._reconcile_until = asyncio.get_running_loop().time() + RECONCILE_WINDOW_S
        for _, future in items:
            if future is not None and not future.done():
                future.set_result(None)

    async def _reconcile(self) -> None:
        now = asyncio.get_running_loop().time()
        self._reconciled = now
        if now > self._reconcile_until:
            return
        try:
            async with self.pool.connection() as conn:
                self.counts.update(reconciled=await self.store.reconcile(conn))
        except (psycopg.Error, OSError) as exc:
            log.warning("webhooks: reconciling unknown receipts failed (%s); will retry", exc)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebhookServer:
    """The routes, their verification and parsing, over one Batcher."""

    def __init__(self, settings: Settings, batcher: Batcher) -> None:
        self.settings = settings
        self.secrets = Secrets.of(settings)
        self.keywords = OptOutKeywords(settings.optout.keywords)
        self.batcher = batcher

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.webhooks.max_body_bytes)
        app.router.add_post("/webhooks/twilio/status", self._twilio(inbound=False))
        app.router.add_post("/webhooks/twilio/inbound", self._twilio(inbound=True))
        app.router.add_get("/webhooks/whatsapp", self.whatsapp_handshake)
        app.router.add_post("/webhooks/whatsapp", self.whatsapp)
        app.router.add_post("/webhooks/sendgrid", self.sendgrid)
        app.router.add_post("/webhooks/zenvia", self.zenvia)
        app.router.add_get("/healthz", self.healthz)
        return app

    def _url(self, request: web.Request) -> str:
        """The URL the provider signed: the public one behind a proxy, else the one requested."""
        public = self.settings.webhooks.public_url
        if public:
            return public.rstrip("/") + request.raw_path
        return f"{request.scheme}://{request.host}{request.raw_path}"

    async def _record(self, events: list[Event], twiml: bool = False) -> web.StreamResponse:
        """Queue ``events`` and answer: at once for receipts, once committed when there is an opt-out
        (Twilio's inbound webhook wants TwiML: an empty reply)."""
        opt_out = any(isinstance(event, OptOut) for event in events)
        try:
            await asyncio.wait_for(self.batcher.submit(events, wait=opt_out), ANSWER_TIMEOUT_S)
        except (psycopg.Error, OSError, TimeoutError, Overloaded):
            return web.json_response({"ok": False, "error": "not recorded; send it again"}, status=503)
        if twiml:
            return web.Response(text=_TWIML_EMPTY, content_type="text/xml")
        return web.json_response({"ok": True})

    def _twilio(self, inbound: bool) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            signature = request.headers.get(signatures.TWILIO_HEADER, "")
            if not signatures.twilio_valid(self.secrets.twilio, self._url(request), form, signature):
                return _forbidden()
            fields = dict(form)
            if inbound:
                return await self._record(parse.twilio_inbound(fields, self.keywords), twiml=True)
            return await self._record(parse.twilio_status(fields))

        return handle

    async def whatsapp_handshake(self, request: web.Request) -> web.StreamResponse:
        """Meta's subscription check: echo ``hub.challenge`` when ``hub.verify_token`` is ours."""
        query = request.query
        token = query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not signatures.token_valid(
            self.secrets.meta_verify, token
        ):
            return _forbidden()
        return web.Response(text=query.get("hub.challenge", ""))

    async def whatsapp(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        signature = request.headers.get(signatures.META_HEADER, "")
        if not signatures.meta_valid(self.secrets.meta, body, signature):
            return _forbidden()
        payload = _json(body)
        if not isinstance(payload, dict):
            return _bad_request()
        return await self._record(parse.meta(payload, self.keywords))

    async def sendgrid(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = request.headers
        if not signatures.sendgrid_valid(
            self.secrets.sendgrid,
            body,
            headers.get(signatures.SENDGRID_SIGNATURE, ""),
            headers.get(signatures.SENDGRID_TIMESTAMP, ""),
        ):
            return _forbidden()
        payload = _json(body)
        if not isinstance(payload, list):
            return _bad_request()
        return await self._record(parse.sendgrid(payload))

    async def zenvia(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not any(
            signatures.token_valid([token], request.headers.get(header, ""))
            for header, token in self.secrets.zenvia
        ):
            return _forbidden()
        payload = _json(body)
        if not isinstance(payload, dict):
            return _bad_request()
        return await self._record(parse.zenvia(payload, self.keywords))

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "waiting": self.batcher.waiting(), **self.batcher.counts})


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _forbidden() -> web.Response:
    return web.json_response({"ok": False, "error": "bad or missing signature"}, status=403)


def _bad_request() -> web.Response:
    return web.json_response({"ok": False, "error": "unexpected body"}, status=400)


@dataclass
class Running:
    """A started server: its base URL and what to stop."""

    url: str
    server: WebhookServer
    runner: web.AppRunner
    writer: asyncio.Task[None]
    pool: AsyncConnectionPool

    async def stop(self) -> None:
        """Stop listening, let requests finish, write every queued event, then close."""
        await self.runner.cleanup()
        self.server.batcher.close()
        await self.writer
        await self.pool.close()


async def start(settings: Settings, endpoints: Endpoints, host: str, port: int) -> Running:
    """Listen on ``host:port`` (0: a free port); the namespace's schema must be migrated."""
    pool = await open_async_pool(endpoints.database_url, settings, max_size=2)
    try:
        batcher = Batcher(pool, settings)
        server = WebhookServer(settings, batcher)
        runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await pool.close()
        raise
    writer = asyncio.create_task(batcher.run())
    bound_host, bound_port = runner.addresses[0][:2]
    return Running(f"http://{bound_host}:{bound_port}", server, runner, writer, pool)


@contextlib.contextmanager
def serve_in_thread(settings: Settings, endpoints: Endpoints, host: str = "127.0.0.1") -> Iterator[Running]:
    """The server on a free port in a daemon thread with its own event loop (tests, demos)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="leadctl-webhooks", daemon=True)
    thread.start()
    running: Running | None = None
    try:
        running = asyncio.run_coroutine_threadsafe(start(settings, endpoints, host, 0), loop).result(
            timeout=15
        )
        yield running
    finally:
        if running is not None:
            asyncio.run_coroutine_threadsafe(running.stop(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def run(
    settings: Settings,
    endpoints: Endpoints,
    host: str | None,
    port: int | None,
    say: Callable[[str], None],
) -> None:
    """`leadctl webhooks serve`: check PostgreSQL (and migrate its schema), then serve on ``host``
    and ``port`` (None: ``webhooks.host`` and ``webhooks.port``) until SIGINT or SIGTERM."""
    open_postgres(endpoints.database_url, settings).close()
    address = (host or settings.webhooks.host, port if port is not None else settings.webhooks.port)

    async def main() -> None:
        running = await start(settings, endpoints, *address)
        verified = ", ".join(running.server.secrets.configured()) or "none: every request will get 403"
        say(f"webhooks: listening on {running.url} (signatures verified for: {verified}); Ctrl-C stops")
        stop = stop_on_signals()
        try:
            await stop.wait()
        finally:
            await running.stop()

    asyncio.run(main())
