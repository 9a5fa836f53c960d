"""Waiting for a real condition (a row count, a Redis key, a log line, a process), never for a guess.

The timeout only bounds a failure: it is generous, and a test that passes never reaches it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 30.0, *, what: str = "the condition", every: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return value


async def wait_until(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 30.0,
    *,
    what: str = "the condition",
    every: float = 0.01,
) -> Any:
    """``wait_for`` inside an event loop: the loop keeps running other tasks between the polls.
    ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
