"""Failover over real HTTP: a channel's providers behind circuit breakers, against two sandboxes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
import yaml

from leadctl.config import Settings, load_settings
from leadctl.errors import ConfigError
from leadctl.local.sandbox.server import SandboxServer, sandbox_in_thread
from leadctl.local.sandbox.wires import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SANDBOX_ZENVIA_TOKEN
from leadctl.providers.base import Message, ProviderError, SendResult
from leadctl.providers.breaker import CircuitBreaker
from leadctl.providers.chain import CIRCUIT_OPEN, Call, ProviderChain, build_chain
from leadctl.providers.registry import make_session
from leadctl.queue import keys
from tests.support.cli import run_leadctl
from tests.support.files import write_leads
from tests.support.providers import HANG_S
from tests.support.waiting import wait_until


class Sandboxes:
    """Sandbox servers on one background event loop; one can be replaced on its port (an outage ends)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.servers: dict[str, SandboxServer] = {}
        self.urls: dict[str, str] = {}

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def start(self, name: str, port: int = 0, **faults: Any) -> str:
        server = SandboxServer(**faults)
        self.urls[name] = self._run(server.start(port=port))
        self.servers[name] = server
        return self.urls[name]

    def replace(self, name: str, **faults: Any) -> None:
        """Stop ``name`` and serve a fresh sandbox with ``faults`` on the same port."""
        self._run(self.servers[name].stop())
        self.start(name, int(self.urls[name].rsplit(":", 1)[1]), **faults)

    def stats(self, name: str) -> dict[str, int]:
        return self.servers[name].stats()

    def stop(self) -> None:
        for server in self.servers.values():
            self._run(server.stop())


@pytest.fixture
def sandboxes() -> Iterator[Sandboxes]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandboxes", daemon=True)
    thread.start()
    handle = Sandboxes(loop)
    try:
        yield handle
    finally:
        handle.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


CREDENTIALS = {
    "zenvia": {"type": "zenvia", "api_token": SANDBOX_ZENVIA_TOKEN, "from": "leadctl"},
    "twilio": {
        "type": "twilio",
        "account_sid": SANDBOX_ACCOUNT_SID,
        "auth_token": SANDBOX_AUTH_TOKEN,
        "from": "+15005550006",
    },
}


def chain_settings(settings: Settings, urls: dict[str, str], **overrides: Any) -> Settings:
    """The test's settings with sms sent through ``urls``' providers in order, each on its sandbox."""
    providers = {
        name: {
            **CREDENTIALS[name],
            "base_url": url,
            "connect_timeout_ms": 1000,
            "read_timeout_ms": 2000,
            "breaker_failures": 3,
            "breaker_reset_s": 0.5,
            **overrides.get(name, {}),
        }
        for name, url in urls.items()
    }
    raw = settings.model_dump(by_alias=True)
    raw.update({"providers": providers, "channels": {"sms": {"providers": list(urls)}}})
    return Settings.model_validate(raw)


def message(number: int, to: str | None = None) -> Message:
    return Message(number, "sms", to or f"+551198765{number:04d}", "Olá! Oferta especial.")


async def outcome(
    chain: ProviderChain, item: Message, call: Call | None = None
) -> SendResult | ProviderError:
    try:
        return await chain.send(item, call)
    except ProviderError as exc:
        return exc


def with_chain(settings: Settings, test: Any) -> Any:
    """Run ``test(chain)`` with the chain built as a worker builds it (one session, one Redis client)."""

    async def go() -> Any:
        client = aioredis.Redis.from_url(settings.redis.url)
        async with make_session(10) as session:
            try:
                return await test(build_chain(settings, "sms", session, client))
            finally:
                await client.aclose()

    return asyncio.run(go())


def sent_by(results: list[SendResult | ProviderError]) -> list[str]:
    return [r.details["provider"] if isinstance(r, SendResult) and r.details else repr(r) for r in results]


def test_sends_fail_over_while_the_breaker_is_open_and_come_back_after_the_probe(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    urls = {"zenvia": sandboxes.start("zenvia", error_rate=1.0), "twilio": sandboxes.start("twilio")}
    # open for 2 s: ample for the 7 sends that must meet it open, on a loaded machine too
    settings = chain_settings(settings, urls, zenvia={"breaker_reset_s": 2})

    async def test(chain: ProviderChain) -> tuple[list[Any], list[Any], list[Any]]:
        outage = [await outcome(chain, message(i)) for i in range(8)]
        assert chain.routes[0].breaker.state == "open"
        during = [await outcome(chain, message(i)) for i in range(8, 10)]
        # three 500s opened zenvia's breaker; nothing else was tried on it
        assert sandboxes.stats("zenvia")["requests"] == 3
        await asyncio.to_thread(sandboxes.replace, "zenvia")  # the outage ends
        await wait_until(lambda: chain.routes[0].breaker.retry_in() == 0, what="the breaker's reset period")
        assert chain.routes[0].breaker.state == "half_open"
        after = [await outcome(chain, message(i)) for i in range(10, 15)]
        assert chain.routes[0].breaker.state == "closed"
        return outage, during, after

    outage, during, after = with_chain(settings, test)
    assert sent_by(outage) == ["twilio"] * 8
    assert sent_by(during) == ["twilio"] * 2
    assert sent_by(after) == ["zenvia"] * 5
    assert sandboxes.stats("twilio")["accepted"] == 10
    assert sandboxes.stats("zenvia")["accepted"] == 5 and sandboxes.stats("zenvia")["requests"] == 5
    assert sandboxes.stats("zenvia")["duplicates"] == sandboxes.stats("twilio")["duplicates"] == 0


def test_a_failed_probe_keeps_the_breaker_open(settings: Settings, sandboxes: Sandboxes) -> None:
    urls = {"zenvia": sandboxes.start("zenvia", error_rate=1.0), "twilio": sandboxes.start("twilio")}
    settings = chain_settings(settings, urls)

    async def test(chain: ProviderChain) -> list[Any]:
        results = [await outcome(chain, message(i)) for i in range(3)]
        await wait_until(lambda: chain.routes[0].breaker.retry_in() == 0, what="the breaker's reset period")
        results.append(await outcome(chain, message(3)))  # the probe: zenvia fails, twilio sends
        assert chain.routes[0].breaker.state == "open"
        results.append(await outcome(chain, message(4)))
        return results

    assert sent_by(with_chain(settings, test)) == ["twilio"] * 5
    assert sandboxes.stats("zenvia")["requests"] == 4  # three failures and one probe


def test_in_doubt_is_never_sent_elsewhere(settings: Settings, sandboxes: Sandboxes) -> None:
    urls = {
        "zenvia": sandboxes.start("zenvia", timeout_rate=1.0, hang_s=HANG_S),
        "twilio": sandboxes.start("twilio"),
    }
    settings = chain_settings(settings, urls, zenvia={"read_timeout_ms": 300})

    call = Call()
    (result,) = with_chain(settings, lambda chain: asyncio.gather(outcome(chain, message(1), call)))
    assert isinstance(result, ProviderError) and result.kind == "in_doubt"
    assert (call.provider, call.in_request, len(call.requests)) == ("zenvia", False, 1)
    assert sandboxes.stats("zenvia")["accepted"] == 1
    assert sandboxes.stats("twilio")["requests"] == 0


def test_a_permanent_refusal_is_not_sent_elsewhere(settings: Settings, sandboxes: Sandboxes) -> None:
    urls = {"zenvia": sandboxes.start("zenvia"), "twilio": sandboxes.start("twilio")}
    settings = chain_settings(settings, urls)

    call = Call()

    async def test(chain: ProviderChain) -> Any:
        result = await outcome(chain, message(1, to="+15005550001"), call)  # invalid number
        return result, chain.routes[0].breaker.state

    result, state = with_chain(settings, test)
    assert (
        isinstance(result, ProviderError) and result.kind == "permanent" and result.code == "VALIDATION_ERROR"
    )
    assert call.provider == "zenvia" and state == "closed"
    assert sandboxes.stats("twilio")["requests"] == 0


def test_a_429_pauses_the_provider_for_everyone_and_the_send_goes_on(
    settings: Settings, sandboxes: Sandboxes, redis_client: Any
) -> None:
    urls = {"zenvia": sandboxes.start("zenvia", rate_limit=1), "twilio": sandboxes.start("twilio")}
    settings = chain_settings(settings, urls)
    pause_key = keys.provider_pause(settings.namespace, "zenvia")

    async def test(chain: ProviderChain) -> tuple[list[Any], int]:
        results = [await outcome(chain, message(0))]
        while sent_by(results)[-1] == "zenvia" and len(results) < 4:  # zenvia admits one request a second
            results.append(await outcome(chain, message(len(results))))
        pause_ms = redis_client.pttl(pause_key)
        results.append(await outcome(chain, message(len(results))))  # zenvia is paused: straight to twilio
        return results, pause_ms

    results, pause_ms = with_chain(settings, test)
    assert sent_by(results)[-2:] == ["twilio", "twilio"]
    assert 0 < pause_ms <= 1000  # Retry-After: 1, shared through Redis
    assert sandboxes.stats("zenvia")["rate_limited"] == 1
    assert sandboxes.stats("twilio")["accepted"] == 2


def test_every_breaker_open_is_a_transient_error_with_retry_after(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    urls = {
        "zenvia": sandboxes.start("zenvia", error_rate=1.0),
        "twilio": sandboxes.start("twilio", error_rate=1.0),
    }
    settings = chain_settings(settings, urls)

    async def test(chain: ProviderChain) -> list[Any]:
        return [await outcome(chain, message(i)) for i in range(4)]

    *failures, last = with_chain(settings, test)
    assert all(isinstance(f, ProviderError) and f.kind == "transient" for f in failures)
    assert isinstance(last, ProviderError) and last.code == CIRCUIT_OPEN
    assert 0 < (last.retry_after or 0) <= 0.5
    assert sandboxes.stats("zenvia")["requests"] == sandboxes.stats("twilio")["requests"] == 3


def test_a_send_cancelled_waiting_for_a_token_never_reached_a_provider(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    """The worker's shutdown tells "certainly not sent" (queued again) from "maybe sent" (in doubt)."""
    urls = {"zenvia": sandboxes.start("zenvia", timeout_rate=1.0, hang_s=HANG_S)}
    settings = chain_settings(settings, urls, zenvia={"rate_limit": 1, "burst": 1, "read_timeout_ms": 5000})
    hanging, waiting = Call(), Call()

    async def test(chain: ProviderChain) -> None:
        tasks = [
            asyncio.create_task(chain.send(message(i), call)) for i, call in enumerate((hanging, waiting))
        ]
        # the first is in its request (the sandbox has it), the second waits a second for its token
        await wait_until(lambda: hanging.in_request and sandboxes.stats("zenvia")["requests"] == 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with_chain(settings, test)
    assert (hanging.provider, hanging.in_request) == ("zenvia", True)  # cut off mid-request: maybe sent
    assert (waiting.provider, waiting.in_request, waiting.requests) == (None, False, [])  # certainly not
    assert sandboxes.stats("zenvia")["requests"] == 1


class Clock:
    """The breaker's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The breaker reads only ``time.monotonic()``: it gets a clock that moves when the test says."""
    clock = Clock()
    monkeypatch.setattr("leadctl.providers.breaker.time", clock)
    return clock


def test_breaker_states(clock: Clock) -> None:
    breaker = CircuitBreaker("p", failures=2, reset_s=0.5)
    breaker.record_failure()
    breaker.record_success()  # a success breaks the run
    breaker.record_failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    breaker.record_success()  # a send from before it opened does not close it
    assert breaker.state == "open"
    clock.advance(0.25)
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(0.25)
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_lost_probe_is_replaced_after_another_reset_period(clock: Clock) -> None:
    breaker = CircuitBreaker("p", failures=1, reset_s=0.05)
    breaker.record_failure()
    clock.advance(0.05)
    assert breaker.allow()  # a probe whose result never comes
    assert not breaker.allow()
    clock.advance(0.05)
    assert breaker.allow()


def test_a_worker_run_fails_over_and_stats_show_which_provider_sent(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    phones = write_leads(tmp_path / "leads.csv", 300)
    with sandbox_in_thread(error_rate=1.0) as down, sandbox_in_thread(latency_ms=5) as up:
        config = tmp_path / "leadctl.yaml"
        urls = {"zenvia": down.base_url, "twilio": up.base_url}
        providers = {name: {**CREDENTIALS[name], "base_url": url} for name, url in urls.items()}
        sms = {"providers": ["zenvia", "twilio"], "template": "Oi {{ name }}!"}
        config.write_text(yaml.safe_dump({"channels": {"sms": sms}, "providers": providers}))
        for command in (
            ["ingest", str(tmp_path / "leads.csv")],
            ["work", "--channel", "sms", "--workers", "2", "--concurrency", "10", "--burst"],
        ):
            done = run_leadctl(["--config", str(config), *command], leadctl_env)
            assert done.returncode == 0, done.stderr
        stats = run_leadctl(["--config", str(config), "stats", "--json"], leadctl_env)
        assert stats.returncode == 0, stats.stderr
        tried_down, messages = down.stats()["requests"], up.messages()

    assert sorted(m["to"] for m in messages) == sorted(phones)  # each lead once, all by twilio
    # each process's breaker opens after 5 failures in a row; sends in flight then still fail over
    assert 10 <= tried_down <= 2 * 10
    rows = pg.execute(
        f'SELECT status, provider, count(*) FROM "{settings.namespace}".lead_deliveries GROUP BY 1, 2'
    )
    assert rows.fetchall() == [("sent", "twilio", 300)]
    assert json.loads(stats.stdout)["providers"]["twilio"]["sent"] == 300


def test_a_channels_providers_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "leadctl.yaml"
    config.write_text("channels:\n  sms:\n    provider: twilio\n")
    assert load_settings(config, {}).channel("sms").provider_names() == ["twilio"]
    env = {"LEADCTL_CHANNELS__SMS__PROVIDERS": "[zenvia, twilio]"}
    assert load_settings(config, env).channel("sms").provider_names() == ["zenvia", "twilio"]
    with pytest.raises(ConfigError, match=r"channels\.sms\.providers"):
        load_settings(config, {"LEADCTL_CHANNELS__SMS__PROVIDERS": "[]"})
