"""Delivery of JSON callbacks to a network node: the policy and the senders.

`CallbackPolicy` (attempts, backoff, whole-attempt timeout, deadline, concurrency, queue bound)
is built from a side's settings with `CallbackPolicy.of(settings)`. `DestinationSender` delivers
under it from per-destination queues; the PoC engine's sender is one (`mlnode.pow.engine.
callbacks`). A 5xx, 408, 425 or 429 is retried (`retryable`); another 4xx is dropped at once
(`dropped_refused`). Every drop is counted in `CallbackStats`; logs and `last_error` name a
destination (`scheme://host:port`), never a whole URL.

PoW v1 sends with it too, from its worker threads (`submit_from_thread`), one callback in flight
per destination so that its batches arrive in order.

Engine-safe (standard library, httpx, pydantic and `hygiene`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import httpx
from pydantic import BaseModel, Field

from mlnode.common.hygiene import redact_text

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})


def retry_delay(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped."""
    return float(min(max_s, first_s * 2 ** (attempt - 1)))


def callback_url(base_url: str, path: str) -> str:
    """`base_url` joined with `path` by exactly one slash."""
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


@dataclass(frozen=True)
class CallbackPolicy:
    """How callbacks are sent: the same fields on the node's and the engine's settings."""

    callback_attempts: int
    callback_backoff_s: float
    callback_backoff_max_s: float
    callback_timeout_s: float
    callback_deadline_s: float
    callback_concurrency: int
    callback_per_destination: int
    callback_queue: int

    @classmethod
    def of(cls, settings: object) -> CallbackPolicy:
        """The policy from settings carrying these fields (`PocEngineSettings`, `PowSettings`)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def retryable(status: int) -> bool:
    """Whether a failed answer may succeed later: 5xx, 408, 425, 429."""
    return status >= 500 or status in RETRYABLE_STATUS


class CallbackStats(BaseModel):
    """Counters of a sender's callback deliveries since it was created."""

    sent: int = Field(0, description="Callbacks the receiver accepted (HTTP < 400).")
    retried: int = Field(0, description="Failed attempts that were retried.")
    dropped_failed: int = Field(0, description="Callbacks dropped after every attempt failed.")
    dropped_overflow: int = Field(
        0, description="Callbacks dropped because the queue was full, or pending at shutdown."
    )
    dropped_invalid: int = Field(0, description="Callbacks dropped because the URL is unusable.")
    dropped_expired: int = Field(
        0, description="Callbacks dropped because their deadline passed before delivery."
    )
    dropped_refused: int = Field(
        0, description="Callbacks the receiver refused with a 4xx other than 408/425/429."
    )
    pending: int = Field(0, description="Callbacks waiting or being delivered now.")
    destinations: int = Field(0, description="Destinations with callbacks waiting or in flight.")
    last_error: str | None = Field(
        None, description="Why the last failed attempt failed (its destination only)."
    )

    @property
    def dropped(self) -> int:
        """Callbacks given up on, for any reason."""
        return (
            self.dropped_failed
            + self.dropped_overflow
            + self.dropped_invalid
            + self.dropped_expired
            + self.dropped_refused
        )


class InvalidCallbackUrl(ValueError):
    """A callback URL that cannot be posted to."""


def destination(url: str) -> str:
    """`scheme://host:port` of a callback URL (what logs show); InvalidCallbackUrl when unusable."""
    try:
        parsed = httpx.URL(url)
        scheme, host, port = parsed.scheme, parsed.host, parsed.port
    except (httpx.InvalidURL, TypeError, ValueError) as exc:  # IDNA errors are ValueErrors
        raise InvalidCallbackUrl(
            f"callback url cannot be parsed: {redact_text(str(exc))}"
        ) from None
    if scheme not in ("http", "https") or not host:
        raise InvalidCallbackUrl("callback url needs http(s)://host")
    port = port or (443 if scheme == "https" else 80)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class _Pending:
    """One POST to deliver, and when it expires (monotonic time)."""

    url: str
    body: dict[str, Any]
    expires: float


class DestinationSender:
    """Delivers callbacks from per-destination queues, bounded by a `CallbackPolicy`."""

    def __init__(
        self,
        policy: CallbackPolicy,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._settings = policy
        self._client = client or httpx.AsyncClient(timeout=policy.callback_timeout_s)
        # Monotonic, as the event loop's clock: `submit` may come before any loop runs.
        self._clock = clock or time.monotonic
        self._queues: dict[str, deque[_Pending]] = {}
        self._busy: dict[str, int] = {}
        self._waiting = 0
        self._ready = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = CallbackStats()
        self._last_error: str | None = None

    def _now(self) -> float:
        return self._clock()

    def start(self) -> None:
        """Start the dispatcher inside the running event loop (once; again after `close`)."""
        if self._dispatcher is not None and not self._dispatcher.done():
            return
        self._loop = asyncio.get_running_loop()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="mlnode-callbacks")

    def submit_from_thread(self, url: str, body: dict[str, Any]) -> None:
        """`submit` from another thread: handed to the sender's loop (directly when not started)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.submit(url, body)
        else:
            loop.call_soon_threadsafe(self.submit, url, body)

    def submit(self, url: str, body: dict[str, Any]) -> None:
        """Queue a POST to `url`; drops (counted) an unusable URL or, when full, the oldest."""
        try:
            dest = destination(url)
        except InvalidCallbackUrl as exc:
            self._stats.dropped_invalid += 1
            self._last_error = str(exc)
            log.warning("callback dropped: %s", exc)
            return
        if self._waiting >= self._settings.callback_queue:
            longest = max(self._queues, key=lambda d: len(self._queues[d]))
            self._queues[longest].popleft()
            self._waiting -= 1
            self._stats.dropped_overflow += 1
            log.warning("callback queue full: dropped the oldest callback to %s", longest)
        expires = self._now() + self._settings.callback_deadline_s
        self._queues.setdefault(dest, deque()).append(_Pending(url, body, expires))
        self._waiting += 1
        self._ready.set()

    def stats(self) -> CallbackStats:
        """A copy of the counters."""
        in_flight = sum(self._busy.values())
        dests = {d for d, q in self._queues.items() if q} | {d for d, n in self._busy.items() if n}
        return self._stats.model_copy(
            update={
                "pending": self._waiting + in_flight,
                "destinations": len(dests),
                "last_error": self._last_error,
            }
        )

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is pending (True) or `timeout_s` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._waiting or self._tasks:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        """Stop delivering; what is still queued or in flight is counted as dropped."""
        tasks = [*self._tasks, *([self._dispatcher] if self._dispatcher else [])]
        self._stats.dropped_overflow += len(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stats.dropped_overflow += self._waiting
        self._queues.clear()
        self._waiting = 0
        self._dispatcher = None
        await self._client.aclose()

    def _next(self) -> tuple[str, _Pending] | None:
        """The head of the first queue, in turn order, whose destination has a free slot."""
        if len(self._tasks) >= self._settings.callback_concurrency:
            return None
        for dest in list(self._queues):
            queue = self._queues[dest]
            if not queue:
                del self._queues[dest]
            elif self._busy.get(dest, 0) < self._settings.callback_per_destination:
                # Rotate: the destination served now goes to the back of the turn order.
                del self._queues[dest]
                callback = queue.popleft()
                if queue:
                    self._queues[dest] = queue
                return dest, callback
        return None

    async def _dispatch(self) -> None:
        while True:
            self._ready.clear()
            while (item := self._next()) is not None:
                self._waiting -= 1
                self._launch(*item)
            await self._ready.wait()

    def _launch(self, dest: str, callback: _Pending) -> None:
        self._busy[dest] = self._busy.get(dest, 0) + 1
        task = asyncio.create_task(self._guarded(dest, callback))
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self._busy[dest] -= 1
            if not self._busy[dest]:
                del self._busy[dest]
            self._ready.set()

        task.add_done_callback(finished)

    async def _guarded(self, dest: str, callback: _Pending) -> None:
        try:
            await self._deliver(dest, callback)
        except asyncio.CancelledError:
            raise
        except Exception:  # nothing about one callback may end delivery for the others
            self._stats.dropped_failed += 1
            log.exception("callback to %s dropped after an unexpected error", dest)

    async def _attempt(self, callback: _Pending, budget_s: float) -> tuple[int | None, str | None]:
        """(status, None) when delivered, else (status or None, why not); the answer is not read."""
        try:
            async with asyncio.timeout(min(self._settings.callback_timeout_s, budget_s)):
                request = self._client.build_request("POST", callback.url, json=callback.body)
                response = await self._client.send(request, stream=True)
                await response.aclose()
        except TimeoutError:
            return None, "timed out"
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        status = response.status_code
        return status, None if status < 400 else f"HTTP {status}"

    async def _deliver(self, dest: str, callback: _Pending) -> None:
        settings = self._settings
        reason = "deadline passed while queued"
        for attempt in range(1, settings.callback_attempts + 1):
            left = callback.expires - self._now()
            if left <= 0:
                self._stats.dropped_expired += 1
                log.warning("callback to %s dropped: deadline passed (%s)", dest, reason)
                return
            status, failure = await self._attempt(callback, left)
            if failure is None:
                self._stats.sent += 1
                return
            reason = failure
            self._last_error = f"POST {dest}: {reason}"
            if status is not None and not retryable(status):
                self._stats.dropped_refused += 1
                log.warning("callback to %s dropped: the receiver refused it (%s)", dest, reason)
                return
            if attempt == settings.callback_attempts:
                break
            self._stats.retried += 1
            delay = retry_delay(
                attempt, settings.callback_backoff_s, settings.callback_backoff_max_s
            )
            log.info("callback to %s failed (%s); retry in %.1f s", dest, reason, delay)
            await asyncio.sleep(min(delay, max(0.0, callback.expires - self._now())))
        self._stats.dropped_failed += 1
        log.warning("callback to %s dropped after %d attempts (%s)", dest, attempt, reason)
