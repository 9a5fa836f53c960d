"""A fake Twilio Messages API on loopback, for tests, demos and benchmarks.

It speaks Twilio's wire format: ``POST /2010-04-01/Accounts/{sid}/Messages.json``, HTTP Basic auth
(default credentials ``SANDBOX_ACCOUNT_SID`` / ``SANDBOX_AUTH_TOKEN``; wrong ones get 401 code 20003),
a form body with To, From or MessagingServiceSid, and Body, and 201 with a Message resource. Twilio's
magic test numbers fail as documented: To +15005550001 -> 21211, ...0002 -> 21612, ...0003 -> 21408,
...0004 -> 21610 (unsubscribed), ...0009 -> 21614.

Every accepted message is recorded in memory so tests can count sends and duplicates:
``GET /_sandbox/messages``, ``GET /_sandbox/stats``, ``POST /_sandbox/reset``.

Faults: ``latency_ms`` (median of a log-normal delay), ``error_rate`` (fraction answered 500),
``rate_limit`` (requests per second; the excess gets 429 code 20429 with ``Retry-After: 1``),
``timeout_rate`` (fraction accepted and recorded, then left unanswered for ``hang_s`` seconds: the
"in doubt" case), ``seed`` for a reproducible run.

Run it with ``leadctl sandbox`` or ``python -m leadctl.providers.sandbox --port 8099``; in Python,
``sandbox_in_thread()`` (same process) or ``SandboxProcess`` (its own process, for benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

from leadctl.errors import UsageError

SANDBOX_ACCOUNT_SID = "AC00000000000000000000000000000000"
SANDBOX_AUTH_TOKEN = "sandbox-auth-token"
_API = "/2010-04-01/Accounts"
_LATENCY_SIGMA = 0.5  # log-normal spread: p99 is about 3.2x the median
_JSON = "application/json"

_MAGIC_TO = {
    "+15005550001": ("21211", "The 'To' number {to} is not a valid phone number."),
    "+15005550002": ("21612", "The 'To' phone number: {to}, is not currently reachable via SMS."),
    "+15005550003": (
        "21408",
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    ),
    "+15005550004": ("21610", "Attempt to send to unsubscribed recipient"),
    "+15005550009": ("21614", "'To' number {to} is not a valid mobile number"),
}


class SandboxRecord(NamedTuple):
    """One accepted message."""

    sid: str
    to: str
    from_: str | None
    body: str
    time: float

    def as_json(self) -> dict[str, Any]:
        return {"sid": self.sid, "to": self.to, "from": self.from_, "body": self.body, "time": self.time}


def _twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.Response(status=status, body=orjson.dumps(payload), content_type=_JSON, headers=headers)


def _parse_form(raw: bytes) -> dict[str, str]:
    """A form body; parameter names are plain ASCII, so only values are unquoted."""
    form: dict[str, str] = {}
    for pair in raw.decode("utf-8", "replace").split("&"):
        key, _, value = pair.partition("=")
        form[key] = unquote_plus(value)
    return form


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"sandbox {name} must be between 0 and 1, not {value}")
    return value


class SandboxServer:
    """The fake provider; ``await start()`` it in a running loop, read ``records``, ``await stop()``."""

    def __init__(
        self,
        *,
        account_sid: str = SANDBOX_ACCOUNT_SID,
        auth_token: str = SANDBOX_AUTH_TOKEN,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_limit: float | None = None,
        timeout_rate: float = 0.0,
        hang_s: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if latency_ms < 0 or hang_s < 0 or (rate_limit is not None and rate_limit <= 0):
            raise UsageError("sandbox latency_ms and hang_s must be >= 0 and rate_limit > 0")
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._latency_mu = math.log(latency_ms / 1000) if latency_ms else None
        self._error_rate = _check_fraction("error_rate", error_rate)
        self._rate_limit = rate_limit
        self._timeout_rate = _check_fraction("timeout_rate", timeout_rate)
        self._hang_s = hang_s
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._date = (0, "")
        self.records: list[SandboxRecord] = []
        self._seen: set[str] = set()
        self.reset()

    def reset(self) -> None:
        """Forget every message and zero the counters."""
        self.records.clear()
        self._seen.clear()
        self._window = (0, 0)  # (second, requests admitted in it) for rate_limit
        self.requests = self.accepted = self.duplicates = 0
        self.rejected = self.errors = self.rate_limited = self.hung = 0

    def stats(self) -> dict[str, int]:
        """Counters since start or reset; ``duplicates``: accepted sends to an already-accepted ``to``."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "hung": self.hung,
        }

    def messages(self) -> list[dict[str, Any]]:
        return [record.as_json() for record in list(self.records)]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port) and return the base URL."""
        app = web.Application()
        app.router.add_post(_API + "/{account_sid}/Messages.json", self._create_message)
        app.router.add_get("/_sandbox/messages", self._list_messages)
        app.router.add_get("/_sandbox/stats", self._stats)
        app.router.add_post("/_sandbox/reset", self._reset)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=4096, reuse_address=True).start()
        return f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Release hanging requests and close the listener."""
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _now_rfc2822(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now)))
        return self._date[1]

    def _over_rate_limit(self, limit: float) -> bool:
        """Admit up to ``limit`` requests per clock second; refused ones do not count."""
        second = int(time.monotonic())
        count = self._window[1] if self._window[0] == second else 0
        if count >= limit:
            return True
        self._window = (second, count + 1)
        return False

    async def _create_message(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != self._auth:
            self.rejected += 1
            message = "Authentication Error - invalid username"
            return _twilio_error(401, 20003, message, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if request.match_info["account_sid"] != self.account_sid:
            self.rejected += 1
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        if self._rate_limit is not None and self._over_rate_limit(self._rate_limit):
            self.rate_limited += 1
            return _twilio_error(
                429, 20429, "Too many requests. Please retry later.", headers={"Retry-After": "1"}
            )
        rng = self._rng
        if self._latency_mu is not None:
            await asyncio.sleep(rng.lognormvariate(self._latency_mu, _LATENCY_SIGMA))
        if self._error_rate and rng.random() < self._error_rate:
            self.errors += 1
            return _twilio_error(500, 20500, "Internal Server Error")
        form = _parse_form(await request.read())
        to = form.get("To")
        sender = form.get("From")
        service = form.get("MessagingServiceSid")
        body = form.get("Body")
        if not to:
            self.rejected += 1
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            self.rejected += 1
            return _twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if not body:
            self.rejected += 1
            return _twilio_error(400, 21602, "Message body is required.")
        magic = _MAGIC_TO.get(to.removeprefix("whatsapp:"))
        if magic is not None:
            self.rejected += 1
            return _twilio_error(400, int(magic[0]), magic[1].format(to=to))

        sid = f"SM{rng.getrandbits(128):032x}"
        if to in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(to)
        self.records.append(SandboxRecord(sid, to, sender, body, time.time()))
        self.accepted += 1
        if self._timeout_rate and rng.random() < self._timeout_rate:
            self.hung += 1
            await self._hang()
        created = self._now_rfc2822()
        uri = f"{_API}/{self.account_sid}/Messages/{sid}"
        payload = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
        return web.Response(status=201, body=orjson.dumps(payload), content_type=_JSON)

    async def _hang(self) -> None:
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self._hang_s)

    async def _list_messages(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.messages()), content_type=_JSON)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type=_JSON)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)


async def _serve(host: str, port: int, faults: dict[str, Any]) -> None:
    server = SandboxServer(**faults)
    url = await server.start(host, port)
    print(
        f"sandbox: Twilio-compatible API on {url} (account_sid {server.account_sid}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_sandbox(host: str = "127.0.0.1", port: int = 0, **faults: Any) -> None:
    """Serve until SIGINT/SIGTERM; the base URL is printed on stderr once listening."""
    asyncio.run(_serve(host, port, faults))


@dataclass
class SandboxHandle:
    """A sandbox running on a background thread (see ``sandbox_in_thread``)."""

    base_url: str
    server: SandboxServer
    loop: asyncio.AbstractEventLoop

    def messages(self) -> list[dict[str, Any]]:
        return self.server.messages()

    def stats(self) -> dict[str, int]:
        return self.server.stats()

    def reset(self) -> None:
        async def reset() -> None:
            self.server.reset()

        asyncio.run_coroutine_threadsafe(reset(), self.loop).result()


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

    ``SandboxProcess(latency_ms=20, seed=1)`` starts ``python -m leadctl.providers.sandbox`` and
    returns once it answers; use it as a context manager or call ``stop()``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_s: float = 15.0, **faults: Any):
        command = [sys.executable, "-m", "leadctl.providers.sandbox", "--host", host, "--port", str(port)]
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

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path, method=method)
        with self._opener.open(request, timeout=30) as response:
            raw = response.read()
        return orjson.loads(raw) if raw else None

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sandbox/messages")

    def stats(self) -> dict[str, int]:
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
    parser = argparse.ArgumentParser(prog="python -m leadctl.providers.sandbox", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default=SANDBOX_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=SANDBOX_AUTH_TOKEN)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="median answer delay")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s before 429")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="fraction recorded, then unanswered")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long an unanswered request hangs")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        run_sandbox(**vars(args))
    except UsageError as exc:
        parser.error(str(exc))
    except OSError as exc:
        sys.exit(f"error: sandbox cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
