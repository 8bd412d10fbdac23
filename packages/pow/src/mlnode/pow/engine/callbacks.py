"""Callbacks to the network node: per-destination queues, bounded retries, deadlines, drops counted.

A delivery succeeds on any HTTP status below 400. A failing one is retried after 1, 2, 4, ... s
(capped) up to `callback_attempts` tries, each try cut off after `callback_timeout_s` in all, and
the callback is dropped once `callback_deadline_s` have passed since it was queued. Callbacks wait
in one queue per destination (scheme, host, port); at most `callback_per_destination` of them are
in flight to one destination and `callback_concurrency` in all, destinations taking turns, so a
receiver that never answers delays only its own callbacks. When `callback_queue` are waiting, the
oldest of the longest queue goes. A URL httpx cannot parse is dropped at once. Every drop is
counted in `stats()` (shown by `/status`); logs name a destination, never a whole URL.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, Field

from mlnode.common.callbacks import retry_delay
from mlnode.common.hygiene import redact_text
from mlnode.pow.engine.settings import PocEngineSettings

log = logging.getLogger(__name__)


class CallbackStats(BaseModel):
    """Counters of callback deliveries since the engine started."""

    sent: int = Field(0, description="Callbacks the receiver accepted (HTTP < 400).")
    retried: int = Field(0, description="Failed attempts that were retried.")
    dropped_failed: int = Field(0, description="Callbacks dropped after every attempt failed.")
    dropped_overflow: int = Field(0, description="Callbacks dropped because the queue was full.")
    dropped_invalid: int = Field(0, description="Callbacks dropped because the URL is unusable.")
    dropped_expired: int = Field(
        0, description="Callbacks dropped because their deadline passed before delivery."
    )
    pending: int = Field(0, description="Callbacks waiting or being delivered now.")
    destinations: int = Field(0, description="Destinations with callbacks waiting or in flight.")


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
class Callback:
    """One POST to deliver, and when it expires (loop time)."""

    url: str
    body: dict[str, Any]
    expires: float


class CallbackSender:
    """Delivers callbacks from per-destination queues with bounded concurrency."""

    def __init__(
        self,
        settings: PocEngineSettings,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings
        self._client = client or httpx.AsyncClient(timeout=settings.callback_timeout_s)
        self._clock = clock
        self._queues: dict[str, deque[Callback]] = {}
        self._busy: dict[str, int] = {}
        self._waiting = 0
        self._ready = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = CallbackStats()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def start(self) -> None:
        """Start the dispatcher (inside the running event loop)."""
        self._dispatcher = asyncio.create_task(self._dispatch(), name="mlnode-poc-callbacks")

    def submit(self, url: str, body: dict[str, Any]) -> None:
        """Queue a POST to `url`; drops (counted) an unusable URL or, when full, the oldest."""
        try:
            dest = destination(url)
        except InvalidCallbackUrl as exc:
            self._stats.dropped_invalid += 1
            log.warning("callback dropped: %s", exc)
            return
        if self._waiting >= self._settings.callback_queue:
            longest = max(self._queues, key=lambda d: len(self._queues[d]))
            self._queues[longest].popleft()
            self._waiting -= 1
            self._stats.dropped_overflow += 1
            log.warning("callback queue full: dropped the oldest callback to %s", longest)
        expires = self._now() + self._settings.callback_deadline_s
        self._queues.setdefault(dest, deque()).append(Callback(url, body, expires))
        self._waiting += 1
        self._ready.set()

    def stats(self) -> CallbackStats:
        """A copy of the counters."""
        in_flight = sum(self._busy.values())
        dests = {d for d, q in self._queues.items() if q} | {d for d, n in self._busy.items() if n}
        return self._stats.model_copy(
            update={"pending": self._waiting + in_flight, "destinations": len(dests)}
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
        await self._client.aclose()

    def _next(self) -> tuple[str, Callback] | None:
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

    def _launch(self, dest: str, callback: Callback) -> None:
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

    async def _guarded(self, dest: str, callback: Callback) -> None:
        try:
            await self._deliver(dest, callback)
        except asyncio.CancelledError:
            raise
        except Exception:  # nothing about one callback may end delivery for the others
            self._stats.dropped_failed += 1
            log.exception("callback to %s dropped after an unexpected error", dest)

    async def _attempt(self, callback: Callback, budget_s: float) -> str | None:
        """None when delivered, else why not."""
        try:
            async with asyncio.timeout(min(self._settings.callback_timeout_s, budget_s)):
                response = await self._client.post(callback.url, json=callback.body)
        except TimeoutError:
            return "timed out"
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if response.status_code < 400 else f"HTTP {response.status_code}"

    async def _deliver(self, dest: str, callback: Callback) -> None:
        settings = self._settings
        reason = "deadline passed while queued"
        for attempt in range(1, settings.callback_attempts + 1):
            left = callback.expires - self._now()
            if left <= 0:
                self._stats.dropped_expired += 1
                log.warning("callback to %s dropped: deadline passed (%s)", dest, reason)
                return
            failure = await self._attempt(callback, left)
            if failure is None:
                self._stats.sent += 1
                return
            reason = failure
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
