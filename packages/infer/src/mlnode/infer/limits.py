"""Limits of the inference port: the settings' bounds, and the clock and budget that keep them.

The bounds themselves (`HttpLimits`) and their errors live in `mlnode.common.http`, because the
REST port keeps them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum

from mlnode.common.http.limits import HeaderTooLarge, HttpLimits
from mlnode.infer.settings import InferSettings


def http_limits(settings: InferSettings) -> HttpLimits:
    """The limits the settings ask for."""
    return HttpLimits(
        max_head_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
        max_body_bytes=settings.max_body_bytes,
    )


class Reading(Enum):
    """Where the parser is in the client's byte stream."""

    BETWEEN = "between"
    HEAD = "head"
    BODY = "body"


class Stall(Enum):
    """Why a client connection is closed for taking too long."""

    IDLE = "idle"
    HEAD = "head"
    BODY = "body"


class ConnectionClock:
    """One connection's deadline, re-armed lazily: a timer that fires early just looks again.

    A data callback only moves a number; the loop's timer is replaced only when the deadline
    comes nearer, so a busy connection costs no timer churn.
    """

    __slots__ = (
        "_busy",
        "_expired",
        "_head_since",
        "_last_read",
        "_idle_since",
        "_loop",
        "_paused",
        "_timer",
        "_timer_at",
        "limits",
        "reading",
    )

    def __init__(self, limits: HttpLimits, expired: Callable[[Stall], None]) -> None:
        self.limits = limits
        self._expired = expired
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.reading = Reading.BETWEEN
        # The first request must come as fast as a head would: nginx starts the header clock
        # at accept.
        self._idle_since = now - limits.keepalive_timeout_s + limits.header_timeout_s
        self._head_since = now
        self._last_read = now
        self._busy = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._arm()

    def deadline(self) -> tuple[float, Stall] | None:
        """When the connection stalls next, and how; None while nothing is asked of the client."""
        if self._paused:
            return None
        if self.reading is Reading.HEAD:
            return self._head_since + self.limits.header_timeout_s, Stall.HEAD
        if self.reading is Reading.BODY:
            return self._last_read + self.limits.body_timeout_s, Stall.BODY
        if self._busy:
            return None
        return self._idle_since + self.limits.keepalive_timeout_s, Stall.IDLE

    def data(self) -> None:
        """Bytes arrived; a connection between requests starts a head."""
        self._last_read = self._loop.time()
        if self.reading is Reading.BETWEEN:
            self.reading = Reading.HEAD
            self._head_since = self._last_read
            self._arm()

    def head_done(self) -> None:
        """The head is complete; the body (if any) follows."""
        self.reading = Reading.BODY
        self._last_read = self._loop.time()
        self._arm()

    def message_done(self) -> None:
        """The whole request arrived."""
        self.reading = Reading.BETWEEN
        self._arm()

    def set_busy(self, busy: bool) -> None:
        """An answer is in progress (the client owes nothing meanwhile) or all are done."""
        if busy == self._busy:
            return
        self._busy = busy
        if not busy:
            self._idle_since = self._loop.time()
        self._arm()

    def set_paused(self, paused: bool) -> None:
        """The node stopped reading the client; its silence is then not its fault."""
        if paused == self._paused:
            return
        self._paused = paused
        if not paused:
            self._last_read = self._head_since = self._loop.time()
        self._arm()

    def stop(self) -> None:
        """The connection is gone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        due = self.deadline()
        if due is None:
            return
        at = due[0]
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        due = self.deadline()
        if due is None:
            return
        if self._loop.time() >= due[0]:
            self._expired(due[1])
            return
        self._arm()


class HeadBudget:
    """Counts the bytes and lines of the head being read; refuses once either runs out."""

    __slots__ = ("_bytes", "_lines", "heads", "limits")

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.heads = 0
        self._bytes = 0
        self._lines = 0

    def reset(self) -> None:
        """The request ended; the next head starts from nothing."""
        self.heads += 1
        self._bytes = 0
        self._lines = 0

    def room(self) -> int:
        """Bytes the head may still grow by."""
        return max(self.limits.max_head_bytes - self._bytes, 0)

    def spend(self, size: int) -> None:
        """`size` bytes of head were read."""
        self._bytes += size

    def line(self) -> None:
        """One more header line; `HeaderTooLarge` past the count."""
        self._lines += 1
        if self._lines > self.limits.max_headers:
            raise HeaderTooLarge(
                f"more than {self.limits.max_headers} header lines (MLNODE_INFER_MAX_HEADERS)"
            )

    def exhausted(self) -> HeaderTooLarge:
        """The error for a head past the byte limit."""
        return HeaderTooLarge(
            f"request head exceeds {self.limits.max_head_bytes} bytes "
            "(MLNODE_INFER_MAX_HEADER_BYTES)"
        )
