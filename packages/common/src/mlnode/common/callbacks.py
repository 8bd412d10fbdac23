"""Reliable delivery of JSON callbacks (POST `{base_url}/{path}`) to a network node.

Payloads wait in a bounded, in-order buffer; a background thread posts them and retries with
exponential backoff while the receiver is down or answers 5xx/429. What cannot be kept (buffer
full, receiver refusing with another 4xx, a URL httpx cannot send to, shutdown with undelivered
items) is counted as dropped and logged, never lost silently. URLs are logged and reported
without their passwords.

Engine-safe (standard library, httpx and `hygiene`): the PoC engine's sender waits between tries
by the same `retry_delay` schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from mlnode.common.hygiene import redact_text, redact_url

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Callback:
    """One payload to deliver."""

    url: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class DeliveryStats:
    """Counters of a sender, for status bodies and metrics."""

    sent: int
    pending: int
    dropped: int
    retries: int
    last_error: str | None


def retry_delay(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped."""
    return float(min(max_s, first_s * 2 ** (attempt - 1)))


def callback_url(base_url: str, path: str) -> str:
    """`base_url` joined with `path` by exactly one slash."""
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


class CallbackSender:
    """Posts callbacks in order from a bounded buffer, retrying while the receiver is down."""

    def __init__(
        self,
        max_pending: int = 10_000,
        timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        name: str = "callbacks",
    ) -> None:
        """Configure the buffer and the retry schedule; `start()` launches delivery."""
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.name = name
        self._queue: deque[Callback] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._sent = self._dropped = self._retries = 0
        self._last_error: str | None = None

    def start(self) -> None:
        """Start the delivery thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._closing = False
            self._thread = threading.Thread(target=self._deliver_loop, name=self.name, daemon=True)
            self._thread.start()

    def submit(self, base_url: str, path: str, payload: dict[str, Any]) -> bool:
        """Queue a payload; False (and counted as dropped) when the buffer is full."""
        with self._cond:
            if len(self._queue) >= self.max_pending:
                self._dropped += 1
                self._last_error = f"buffer full ({self.max_pending}); dropped a {path} callback"
                log.error("%s: %s", self.name, self._last_error)
                return False
            self._queue.append(Callback(callback_url(base_url, path), payload))
            self._cond.notify_all()
            return True

    def stats(self) -> DeliveryStats:
        """Current counters."""
        with self._cond:
            return DeliveryStats(
                sent=self._sent,
                pending=len(self._queue),
                dropped=self._dropped,
                retries=self._retries,
                last_error=self._last_error,
            )

    def flush(self, timeout_s: float) -> bool:
        """Wait until the buffer is empty; False when items remain after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def close(self, flush_timeout_s: float = 5.0) -> None:
        """Try to deliver what is pending, then stop; undelivered items count as dropped."""
        self.flush(flush_timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.timeout_s + 1)
        with self._cond:
            if self._queue:
                self._dropped += len(self._queue)
                self._last_error = f"shut down with {len(self._queue)} undelivered callbacks"
                log.error("%s: %s", self.name, self._last_error)
                self._queue.clear()

    def _next(self) -> Callback | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return None if self._closing else self._queue[0]

    def _deliver_loop(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while (item := self._next()) is not None:
                self._deliver(client, item)

    def _deliver(self, client: httpx.Client, item: Callback) -> None:
        attempt = 0
        while True:
            attempt += 1
            outcome = self._post(client, item)
            with self._cond:
                if outcome is None or outcome == "rejected":
                    self._queue.popleft()
                    if outcome is None:
                        self._sent += 1
                    else:
                        self._dropped += 1
                    self._cond.notify_all()
                    return
                self._retries += 1
                delay = retry_delay(attempt, self.backoff_initial_s, self.backoff_max_s)
                if self._cond.wait_for(lambda: self._closing, timeout=delay):
                    return

    def _post(self, client: httpx.Client, item: Callback) -> str | None:
        """None when delivered, "rejected" when retrying cannot help, "retry" otherwise."""
        try:
            response = client.post(item.url, json=item.payload)
        except (httpx.InvalidURL, UnicodeError) as exc:  # retrying cannot mend the URL
            self._note_error(f"POST {redact_url(item.url)}: unusable URL: {type(exc).__name__}")
            return "rejected"
        except httpx.HTTPError as exc:
            shown = redact_text(str(exc))
            self._note_error(f"POST {redact_url(item.url)}: {type(exc).__name__}: {shown}")
            return "retry"
        if response.is_success:
            return None
        self._note_error(f"POST {redact_url(item.url)}: HTTP {response.status_code}")
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
            return "retry"
        log.error("%s: receiver refused a callback, dropped: %s", self.name, self._last_error)
        return "rejected"

    def _note_error(self, message: str) -> None:
        with self._cond:
            repeated = message == self._last_error
            self._last_error = message
        # A receiver that stays down would otherwise log the same line on every retry.
        log.log(logging.DEBUG if repeated else logging.WARNING, "%s: %s", self.name, message)
