"""Wait until a condition holds, for tests of every tier: one helper instead of hand-written loops.

    body = wait_until(lambda: client.get("/api/v1/train/status").json(),
                      lambda b: b["phase"] == "FINISHED", timeout_s=60, what="training to finish")

The probe's last value is returned, and named in the failure when the deadline passes, so a test
that times out says what it saw rather than only that it waited.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time; the message names what was awaited and the last value."""


def _is_truthy(value: Any) -> bool:
    return bool(value)


def _timeout(what: str, timeout_s: float, last: object) -> WaitTimeout:
    return WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}; last: {last!r}")


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = _is_truthy,
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    what: str = "the condition",
) -> T:
    """Call `probe` until `done(value)` holds and return that value; WaitTimeout after the time."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise _timeout(what, timeout_s, value)
        time.sleep(interval_s)


@overload
async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = ...,
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def wait_until_async(
    probe: Callable[[], T],
    done: Callable[[T], bool] = ...,
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    what: str = ...,
) -> T: ...


async def wait_until_async(
    probe: Callable[[], Any],
    done: Callable[[Any], bool] = _is_truthy,
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    what: str = "the condition",
) -> Any:
    """`wait_until` for the event loop: sleeps with `asyncio.sleep`; `probe` may be a coroutine."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise _timeout(what, timeout_s, value)
        await asyncio.sleep(interval_s)


def not_none(value: T | None) -> T:
    """`value`, asserted present (figures a test expects to be set by now)."""
    assert value is not None
    return value
