"""What every HTTP adapter shares: config checks, timeouts, one POST, and the failure classes.

``post`` makes exactly one request (aiohttp never retries a POST by itself) and sorts what can go
wrong before an answer into the worker's classes: a connection that never opened is transient; a
read timeout or a connection lost after the request was written is in doubt. ``classify_status``
is the fallback for an answer an adapter has no provider-specific rule for.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.providers.base import AUTH_ERROR, ErrorKind, ProviderError

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Reply(NamedTuple):
    """A provider's answer: status, raw body and headers."""

    status: int
    body: bytes
    headers: CIMultiDictProxy[str]


def required(name: str, kind: str, settings: ProviderSettings, *keys: str) -> list[str]:
    """The provider-specific keys' values, or a ConfigError naming the missing ones."""
    values = [settings.from_ if key == "from" else settings.extra(key) for key in keys]
    missing = [key for key, value in zip(keys, values, strict=True) if not value]
    if missing:
        raise ConfigError(f"provider {name!r} ({kind}) needs {' and '.join(missing)}")
    return [str(value) for value in values]


def base_url(name: str, settings: ProviderSettings, default: str) -> URL:
    """``settings.base_url`` (or ``default``) as an absolute http(s) URL."""
    base = URL(settings.base_url or default)
    if not base.is_absolute() or base.scheme not in ("http", "https"):
        raise ConfigError(f"provider {name!r}: base_url must be an http(s) URL")
    return base


def client_timeout(settings: ProviderSettings) -> aiohttp.ClientTimeout:
    """Connect and read timeouts from the provider's settings; no total limit."""
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.connect_timeout_ms / 1000,
        sock_read=settings.read_timeout_ms / 1000,
    )


async def post(
    session: aiohttp.ClientSession,
    url: URL | str,
    body: bytes,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    provider: str,
) -> Reply:
    """POST once and read the whole answer; raise transient / in_doubt when no answer came."""
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
            return Reply(response.status, await response.read(), response.headers)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise ProviderError(ErrorKind.TRANSIENT, f"cannot connect to {provider}: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:  # read timeouts are OSError (TimeoutError) too
        reason = str(exc) or type(exc).__name__
        raise ProviderError(
            ErrorKind.IN_DOUBT, f"no answer from {provider} after sending: {reason}"
        ) from None


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or {} when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, in either of its forms (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def seconds_until(epoch: str | None) -> float | None:
    """Seconds from now until an epoch-seconds header such as ``X-RateLimit-Reset``."""
    try:
        return max(float(epoch) - time.time(), 0.0) if epoch else None
    except ValueError:
        return None


def classify_status(
    status: int,
    summary: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    auth_hint: str = "",
    auth_statuses: tuple[int, ...] = (401, 403),
) -> ProviderError:
    """The default reading of a non-2xx status: refused credentials, 429 and 5xx, other 4xx.

    504 is in doubt: a gateway gave up waiting for the provider, exactly like our own read timeout.
    """
    if status in auth_statuses:
        return ProviderError(ErrorKind.PERMANENT, f"{summary} {auth_hint}".rstrip(), code=AUTH_ERROR)
    if status == 504:
        return ProviderError(ErrorKind.IN_DOUBT, summary, code=code)
    if status == 429 or status >= 500:
        return ProviderError(ErrorKind.TRANSIENT, summary, code=code, retry_after=retry_after)
    return ProviderError(ErrorKind.PERMANENT, summary, code=code)
