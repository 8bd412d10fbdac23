"""Callbacks to the network node: bounded queue, bounded retries with backoff, drops counted.

A delivery succeeds on any HTTP status below 400. A failing one is retried after 1, 2, 4, ... s
(capped) up to `callback_attempts` tries, then dropped; when the queue is full the oldest waiting
callback is dropped. Both kinds of drop are counted in `stats()` (shown by `/status`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, Field

from mlnode.pow.engine.settings import PocEngineSettings

log = logging.getLogger(__name__)


class CallbackStats(BaseModel):
    """Counters of callback deliveries since the engine started."""

    sent: int = Field(0, description="Callbacks the receiver accepted (HTTP < 400).")
    retried: int = Field(0, description="Failed attempts that were retried.")
    dropped_failed: int = Field(0, description="Callbacks dropped after every attempt failed.")
    dropped_overflow: int = Field(0, description="Callbacks dropped because the queue was full.")
    pending: int = Field(0, description="Callbacks waiting or being delivered now.")


@dataclass(frozen=True)
class Callback:
    """One POST to deliver."""

    url: str
    body: dict[str, Any]


def retry_delay(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped."""
    return float(min(max_s, first_s * 2 ** (attempt - 1)))


class CallbackSender:
    """Delivers callbacks from a bounded queue with a fixed number of concurrent senders."""

    def __init__(self, settings: PocEngineSettings, client: httpx.AsyncClient | None = None):
        self._settings = settings
        self._client = client or httpx.AsyncClient(timeout=settings.callback_timeout_s)
        self._queue: deque[Callback] = deque()
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._stats = CallbackStats()

    def start(self) -> None:
        """Start the sender tasks (inside the running event loop)."""
        for _ in range(self._settings.callback_concurrency):
            task = asyncio.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def submit(self, url: str, body: dict[str, Any]) -> None:
        """Queue a POST to `url`; the oldest waiting callback goes when the queue is full."""
        if len(self._queue) >= self._settings.callback_queue:
            dropped = self._queue.popleft()
            self._stats.dropped_overflow += 1
            log.warning("callback queue full: dropped the oldest callback to %s", dropped.url)
        self._queue.append(Callback(url, body))
        self._ready.set()

    def stats(self) -> CallbackStats:
        """A copy of the counters."""
        return self._stats.model_copy(update={"pending": len(self._queue) + self._in_flight})

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is pending (True) or `timeout_s` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._queue or self._in_flight:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        """Stop the senders; what is still queued is counted as dropped."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._stats.dropped_overflow += len(self._queue)
        self._queue.clear()
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            callback = self._queue.popleft()
            self._in_flight += 1
            try:
                await self._deliver(callback)
            finally:
                self._in_flight -= 1

    async def _deliver(self, callback: Callback) -> None:
        settings = self._settings
        for attempt in range(1, settings.callback_attempts + 1):
            try:
                response = await self._client.post(callback.url, json=callback.body)
                if response.status_code < 400:
                    self._stats.sent += 1
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt == settings.callback_attempts:
                break
            self._stats.retried += 1
            delay = retry_delay(
                attempt, settings.callback_backoff_s, settings.callback_backoff_max_s
            )
            log.info("callback to %s failed (%s); retry in %.1f s", callback.url, reason, delay)
            await asyncio.sleep(delay)
        self._stats.dropped_failed += 1
        log.warning("callback to %s dropped after %d attempts (%s)", callback.url, attempt, reason)
