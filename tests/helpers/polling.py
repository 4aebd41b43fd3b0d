"""Waiting for something a real counterpart does, without fixed sleeps.

Contract: `wait_until(probe, until=...)` calls `probe()` every `interval` seconds until `until`
accepts its value, and returns that value; at the deadline it raises AssertionError naming
`what` and the last value seen, so a failing test says what it was waiting for and what it got.
Exceptions from `probe` are not swallowed. `until(condition, what)` is the same for a test
running on the event loop with the daemon in-process: it yields to the loop between checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["CEILING", "until", "wait_until"]

CEILING = 20.0  # generous: a loaded CI machine, never a speed claim

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `probe` until `until(value)` is true; return the accepted value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        time.sleep(interval)


async def until(condition: Callable[[], bool], what: str, *, timeout: float = CEILING) -> None:
    """Yield to the event loop until `condition()` holds; AssertionError naming `what` after
    `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout} s") from None
