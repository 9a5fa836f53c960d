"""A fake provider server on loopback speaking every adapter's wire format, for tests, demos and benchmarks.

One server, one port, each provider on its own paths with its own credentials, bodies, ids and
error bodies (``leadctl.local.sandbox.wires``):

- Twilio: ``POST /2010-04-01/Accounts/{sid}/Messages.json``, Basic ``SANDBOX_ACCOUNT_SID`` /
  ``SANDBOX_AUTH_TOKEN`` (else 401 code 20003), a form with To (``+E164`` or ``whatsapp:+E164``),
  From or MessagingServiceSid, Body or ContentSid + ContentVariables; 201 with a Message (``SM...``).
- WhatsApp Cloud: ``POST /{version}/{SANDBOX_PHONE_NUMBER_ID}/messages``, Bearer
  ``SANDBOX_META_TOKEN`` (else 401 code 190), ``to`` as digits without ``+`` (else code 100), text or
  template messages (template ``missing_template`` -> 132001); 200 with ``wamid.*`` and ``wa_id``.
- Zenvia: ``POST /v2/channels/{sms|whatsapp}/messages``, ``X-API-TOKEN: SANDBOX_ZENVIA_TOKEN`` (else
  401 AUTHENTICATION_ERROR), ``to`` as digits without ``+`` (else 400 VALIDATION_ERROR); 200 with an id.
- SendGrid: ``POST /v3/mail/send``, Bearer ``SANDBOX_SENDGRID_KEY`` (else 401), up to 1,000
  personalizations with distinct addresses, substitutions applied; 202 with ``X-Message-Id``.
- Webhook: ``POST /webhook``, ``Authorization: Bearer SANDBOX_WEBHOOK_TOKEN`` (else 401), leadctl's
  JSON message; 200 with ``{"id": "wh_..."}`` and ``X-Request-Id``.

Magic recipients (phones written E.164; a provider wanting bare digits gets them without ``+``):

==================  ======================  ==============================  ==================  =========
recipient           Twilio                  WhatsApp Cloud                  Zenvia              webhook
==================  ======================  ==============================  ==================  =========
+15005550001        21211 invalid number    131026 undeliverable            VALIDATION_ERROR    422
+15005550002        21612 unreachable       131047 re-engagement window     -                   -
+15005550003        21408 region disabled   -                               -                   -
+15005550004        21610 unsubscribed      131050 stopped marketing        -                   -
+15005550005        -                       131056 pair rate limit (400)    -                   -
+15005550009        21614 not mobile        -                               -                   -
invalid@<any>       -                       -                               -                   422
==================  ======================  ==============================  ==================  =========

SendGrid refuses ``invalid@<any>`` with 400 "Does not contain a valid address." on field
``personalizations.N.to.0.email`` (failing the whole request, as SendGrid does). Zenvia and
SendGrid report opt-outs asynchronously in reality, so they have no opted-out recipient here.

Faults apply to every provider, in its own dialect: ``latency_ms`` (median of a log-normal delay;
``latency_p99_ms`` sets its 99th percentile, else about 3.2x the median), ``error_rate`` (fraction
of the requests the API would take answered 500: a refused request, such as one to a magic
recipient, always gets its refusal, so a test knows each recipient's outcome), ``rate_limit``
(requests per second over all providers; the excess gets 429 with the provider's body and
``Retry-After: 1``, or SendGrid's ``X-RateLimit-Reset``; ``throttle_rate`` answers that 429 to a
random fraction of requests instead), ``timeout_rate`` (fraction accepted and recorded, then left
unanswered for ``hang_s`` seconds: the "in doubt" case), ``seed`` for a reproducible run.

With ``callback_url`` (the base URL of `leadctl webhooks serve`) the sandbox also posts each
provider's signed status callbacks and inbound replies, with their own faults (delay, duplicates,
reordering, failures): see ``leadctl.local.sandbox.callbacks``. ``POST /_sandbox/reply``
(``{"provider", "channel", "from", "text"}``) sends a reply on demand.

Every accepted message is recorded in memory with the provider that took it, so tests can count
sends and duplicates (the same contact accepted twice, by any provider): ``GET /_sandbox/messages``,
``GET /_sandbox/stats``, ``POST /_sandbox/reset``.

Run it with ``leadctl sandbox`` or ``python -m leadctl.local.sandbox.server --port 8099``; in Python,
``sandbox_in_thread()`` (same process) or ``SandboxProcess`` (its own process, for benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson
from aiohttp import web

from leadctl.errors import UsageError
from leadctl.local.sandbox.callbacks import Callbacks
from leadctl.local.sandbox.wires import (
    SANDBOX_ACCOUNT_SID,
    SANDBOX_AUTH_TOKEN,
    SANDBOX_META_TOKEN,
    SANDBOX_PHONE_NUMBER_ID,
    SANDBOX_SENDGRID_KEY,
    SANDBOX_WEBHOOK_TOKEN,
    SANDBOX_ZENVIA_TOKEN,
    Accepted,
    MetaWire,
    SendGridWire,
    TwilioWire,
    WebhookWire,
    ZenviaWire,
)
from leadctl.send.eventloop import run_loop, settle_collector, stop_on_signals

__all__ = [
    "SANDBOX_ACCOUNT_SID",
    "SANDBOX_AUTH_TOKEN",
    "SANDBOX_META_TOKEN",
    "SANDBOX_PHONE_NUMBER_ID",
    "SANDBOX_SENDGRID_KEY",
    "SANDBOX_WEBHOOK_TOKEN",
    "SANDBOX_ZENVIA_TOKEN",
    "SandboxHandle",
    "SandboxProcess",
    "SandboxRecord",
    "SandboxServer",
    "run_sandbox",
    "sandbox_in_thread",
]

_DEFAULT_SIGMA = 0.5  # log-normal spread without a p99: p99 is about 3.2x the median
_Z99 = 2.3263  # the standard normal's 99th percentile
_JSON = "application/json"
_CHANNEL_OF = {"whatsapp_cloud": "whatsapp", "sendgrid": "email"}


class _Wire(Protocol):
    name: str
    path: str

    def authorized(self, request: web.Request) -> bool: ...
    def unauthorized(self) -> web.Response: ...
    def rate_limited(self) -> web.Response: ...
    def server_error(self) -> web.Response: ...
    def parse(self, request: web.Request, raw: bytes) -> list[Accepted] | web.Response: ...
    def ids(self, rng: random.Random, count: int) -> list[str]: ...
    def accepted(self, request: web.Request, items: list[tuple[str, Accepted]]) -> web.Response: ...


class SandboxRecord(NamedTuple):
    """One accepted message: its id, the recipient as sent, sender, text, time and provider."""

    sid: str
    to: str
    from_: str | None
    body: str
    time: float
    provider: str = "twilio"

    def as_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "time": self.time,
            "provider": self.provider,
        }


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"sandbox {name} must be between 0 and 1, not {value}")
    return value


class SandboxServer:
    """The fake providers; ``await start()`` it in a running loop, read ``records``, ``await stop()``."""

    def __init__(
        self,
        *,
        account_sid: str = SANDBOX_ACCOUNT_SID,
        auth_token: str = SANDBOX_AUTH_TOKEN,
        latency_ms: float = 0.0,
        latency_p99_ms: float | None = None,
        error_rate: float = 0.0,
        rate_limit: float | None = None,
        throttle_rate: float = 0.0,
        timeout_rate: float = 0.0,
        hang_s: float = 30.0,
        seed: int | None = None,
        callback_url: str | None = None,
        callback_delay_ms: float = 50.0,
        callback_duplicate_rate: float = 0.0,
        callback_reorder_rate: float = 0.0,
        callback_failure_rate: float = 0.0,
        replies: Mapping[str, str] | None = None,
    ) -> None:
        if latency_ms < 0 or hang_s < 0 or (rate_limit is not None and rate_limit <= 0):
            raise UsageError("sandbox latency_ms and hang_s must be >= 0 and rate_limit > 0")
        if latency_p99_ms is not None and (not latency_ms or latency_p99_ms < latency_ms):
            raise UsageError("sandbox latency_p99_ms needs latency_ms (the median) and must be >= it")
        self.account_sid = account_sid
        self._latency_mu = math.log(latency_ms / 1000) if latency_ms else None
        self._latency_sigma = (
            math.log(latency_p99_ms / latency_ms) / _Z99 if latency_p99_ms is not None else _DEFAULT_SIGMA
        )
        self._error_rate = _check_fraction("error_rate", error_rate)
        self._rate_limit = rate_limit
        self._throttle_rate = _check_fraction("throttle_rate", throttle_rate)
        self._timeout_rate = _check_fraction("timeout_rate", timeout_rate)
        self._hang_s = hang_s
        self._rng = random.Random(seed)
        self._wires: tuple[_Wire, ...] = (
            TwilioWire(account_sid, auth_token),
            MetaWire(),
            ZenviaWire(),
            SendGridWire(),
            WebhookWire(),
        )
        self.callbacks = (
            Callbacks(
                callback_url,
                auth_token,
                self._rng,
                delay_ms=callback_delay_ms,
                duplicate_rate=_check_fraction("callback_duplicate_rate", callback_duplicate_rate),
                reorder_rate=_check_fraction("callback_reorder_rate", callback_reorder_rate),
                failure_rate=_check_fraction("callback_failure_rate", callback_failure_rate),
                replies=replies,
            )
            if callback_url
            else None
        )
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.records: list[SandboxRecord] = []
        self._seen: set[str] = set()
        self.by_provider: collections.Counter[str] = collections.Counter()
        self.reset()

    def reset(self) -> None:
        """Forget every message and zero the counters."""
        self.records.clear()
        self._seen.clear()
        self.by_provider.clear()
        self._window = (0, 0)  # (second, requests admitted in it) for rate_limit
        self.requests = self.accepted = self.duplicates = 0
        self.rejected = self.errors = self.rate_limited = self.hung = 0

    def stats(self) -> dict[str, Any]:
        """Counters since start or reset; ``duplicates``: accepted sends to an already-accepted contact.

        ``providers`` holds the messages each provider accepted.
        """
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "hung": self.hung,
            "providers": dict(self.by_provider),
            **({"callbacks": self.callbacks.counts()} if self.callbacks is not None else {}),
        }

    def messages(self) -> list[dict[str, Any]]:
        return [record.as_json() for record in list(self.records)]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port) and return the base URL."""
        app = web.Application()
        for wire in self._wires:
            app.router.add_post(wire.path, self._handler(wire))
        app.router.add_get("/_sandbox/messages", self._list_messages)
        app.router.add_get("/_sandbox/stats", self._stats)
        app.router.add_post("/_sandbox/reset", self._reset)
        app.router.add_post("/_sandbox/reply", self._reply)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=4096, reuse_address=True).start()
        return f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Release hanging requests and close the listener."""
        if self._closing is not None:
            self._closing.set()
        if self.callbacks is not None:
            await self.callbacks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _over_rate_limit(self, limit: float) -> bool:
        """Admit up to ``limit`` requests per clock second; refused ones do not count."""
        second = int(time.monotonic())
        count = self._window[1] if self._window[0] == second else 0
        if count >= limit:
            return True
        self._window = (second, count + 1)
        return False

    def _handler(self, wire: _Wire) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self.requests += 1
            if not wire.authorized(request):
                self.rejected += 1
                return wire.unauthorized()
            rng = self._rng
            if (self._rate_limit is not None and self._over_rate_limit(self._rate_limit)) or (
                self._throttle_rate and rng.random() < self._throttle_rate
            ):
                self.rate_limited += 1
                return wire.rate_limited()
            if self._latency_mu is not None:
                await asyncio.sleep(rng.lognormvariate(self._latency_mu, self._latency_sigma))
            parsed = wire.parse(request, await request.read())
            if isinstance(parsed, web.Response):  # refused as the API refuses it, whatever the faults
                self.rejected += 1
                return parsed
            if self._error_rate and rng.random() < self._error_rate:
                self.errors += 1
                return wire.server_error()
            items = list(zip(wire.ids(rng, len(parsed)), parsed, strict=True))
            now = time.time()
            for message_id, item in items:
                if item.contact in self._seen:
                    self.duplicates += 1
                else:
                    self._seen.add(item.contact)
                self.records.append(SandboxRecord(message_id, item.to, item.from_, item.body, now, wire.name))
            self.accepted += len(items)
            self.by_provider[wire.name] += len(items)
            if self.callbacks is not None:
                channel = request.match_info.get("channel") or _CHANNEL_OF.get(wire.name, "sms")
                self.callbacks.accepted(wire.name, channel, items)
            if self._timeout_rate and rng.random() < self._timeout_rate:
                self.hung += 1
                await self._hang()
            return wire.accepted(request, items)

        return handle

    async def _hang(self) -> None:
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self._hang_s)

    async def _list_messages(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.messages()), content_type=_JSON)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type=_JSON)

    async def _reply(self, request: web.Request) -> web.Response:
        """An inbound message on demand: ``{"provider", "channel", "from", "text"}``."""
        body = orjson.loads(await request.read() or b"{}")
        if self.callbacks is None:
            return web.json_response({"error": "the sandbox has no callback_url"}, status=409)
        try:
            self.callbacks.reply(body["provider"], body.get("channel", "sms"), body["from"], body["text"])
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.Response(status=202)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)


async def _serve(host: str, port: int, faults: dict[str, Any]) -> None:
    settle_collector()  # a lean instrument: its collector must not be what a benchmark measures
    server = SandboxServer(**faults)
    url = await server.start(host, port)
    print(
        f"sandbox: fake provider APIs on {url} (Twilio, WhatsApp Cloud, Zenvia, SendGrid, webhook); "
        "Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_sandbox(host: str = "127.0.0.1", port: int = 0, **faults: Any) -> None:
    """Serve until SIGINT/SIGTERM; the base URL is printed on stderr once listening."""
    run_loop(_serve(host, port, faults))


@dataclass
class SandboxHandle:
    """A sandbox running on a background thread (see ``sandbox_in_thread``)."""

    base_url: str
    server: SandboxServer
    loop: asyncio.AbstractEventLoop

    def messages(self) -> list[dict[str, Any]]:
        return self.server.messages()

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def reset(self) -> None:
        async def reset() -> None:
            self.server.reset()

        asyncio.run_coroutine_threadsafe(reset(), self.loop).result()

    def reply(self, provider: str, channel: str, contact: str, text: str) -> None:
        """An inbound message from ``contact`` to leadctl's webhooks (needs ``callback_url``)."""

        async def reply() -> None:
            assert self.server.callbacks is not None, "the sandbox has no callback_url"
            self.server.callbacks.reply(provider, channel, contact, text)

        asyncio.run_coroutine_threadsafe(reply(), self.loop).result()


@contextlib.contextmanager
def sandbox_in_thread(**faults: Any) -> Iterator[SandboxHandle]:
    """Run a SandboxServer on 127.0.0.1 in a daemon thread with its own event loop."""
    server = SandboxServer(**faults)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="leadctl-sandbox", daemon=True)
    thread.start()
    try:
        base_url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield SandboxHandle(base_url, server, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class SandboxProcess:
    """The sandbox in its own OS process, so it does not share a GIL with the code under test.

    ``SandboxProcess(latency_ms=20, seed=1)`` starts ``python -m leadctl.local.sandbox.server`` and
    returns once it answers; use it as a context manager or call ``stop()``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_s: float = 15.0, **faults: Any):
        command = [sys.executable, "-m", "leadctl.local.sandbox.server", "--host", host, "--port", str(port)]
        for key, value in faults.items():
            if value is not None:
                command += [f"--{key.replace('_', '-')}", str(value)]
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._started = threading.Event()
        self.base_url = ""
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._drain_stderr, name="sandbox-stderr", daemon=True)
        self._reader.start()
        try:
            if not self._started.wait(startup_s) or not self.base_url:
                raise RuntimeError("sandbox process did not start: " + " | ".join(self._stderr))
            self.stats()  # it answers
        except BaseException:
            self.stop()
            raise

    def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())
            found = re.search(r"http://\S+", line)
            if found and not self.base_url:
                self.base_url = found.group(0)
                self._started.set()
        self._started.set()  # exited: wake the waiter

    @property
    def pid(self) -> int:
        return self._process.pid

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path, method=method)
        with self._opener.open(request, timeout=30) as response:
            raw = response.read()
        return orjson.loads(raw) if raw else None

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sandbox/messages")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/stats")

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(5)
        if self._process.stderr is not None:
            self._process.stderr.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    description = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m leadctl.local.sandbox.server", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default=SANDBOX_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=SANDBOX_AUTH_TOKEN)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="median answer delay")
    parser.add_argument("--latency-p99-ms", type=float, default=None, help="99th percentile answer delay")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s before 429")
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="fraction answered 429")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="fraction recorded, then unanswered")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long an unanswered request hangs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--callback-url", default=None, help="where `leadctl webhooks serve` listens")
    parser.add_argument("--callback-delay-ms", type=float, default=50.0, help="delay before each status")
    parser.add_argument("--callback-duplicate-rate", type=float, default=0.0, help="fraction sent twice")
    parser.add_argument("--callback-reorder-rate", type=float, default=0.0, help="fraction sent last first")
    parser.add_argument("--callback-failure-rate", type=float, default=0.0, help="fraction undelivered")
    args = parser.parse_args(argv)
    try:
        run_sandbox(**vars(args))
    except UsageError as exc:
        parser.error(str(exc))
    except OSError as exc:
        sys.exit(f"error: sandbox cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
