"""Deadlines on blocking reads of server calls, and a per-peer cap on concurrent calls.

The sync gRPC server blocks a worker thread while a handler waits for the peer's next message,
with no deadline of its own. `Watchdog` cancels a call whose armed deadline passed (which wakes
the blocked thread) and runs periodic chores (the inbox's expiry). `PeerSlots` counts open calls
per peer, so that one peer cannot hold every worker.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

from mlnode.common.transport.errors import LimitExceeded

log = logging.getLogger(__name__)

T = TypeVar("T")


class Watchdog:
    """One thread that fires expired deadlines every `tick_s` and runs chores."""

    def __init__(self, tick_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.tick_s = tick_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._armed: dict[int, tuple[float, Callable[[], object]]] = {}
        self._watched: dict[int, tuple[Callable[[], bool], Callable[[], object]]] = {}
        self._chores: list[tuple[float, Callable[[], object]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="transport-watchdog")
            self._thread.daemon = True
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread; armed deadlines no longer fire."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(5)

    def every(self, period_s: float, chore: Callable[[], object]) -> None:
        """Run `chore` about every `period_s` seconds in the watchdog thread."""
        with self._lock:
            self._chores.append((period_s, chore))

    def arm(self, seconds: float, expire: Callable[[], object]) -> int:
        """Call `expire` once `seconds` passed, unless disarmed first; returns the token."""
        token = next(self._ids)
        with self._lock:
            self._armed[token] = (self._clock() + seconds, expire)
        return token

    def disarm(self, token: int) -> None:
        """Forget a deadline (no-op once it fired)."""
        with self._lock:
            self._armed.pop(token, None)

    def watch(self, condition: Callable[[], bool], action: Callable[[], object]) -> int:
        """Call `action` once `condition()` turns true (checked every tick); the token."""
        token = next(self._ids)
        with self._lock:
            self._watched[token] = (condition, action)
        return token

    def unwatch(self, token: int) -> None:
        """Stop watching (no-op once it fired)."""
        with self._lock:
            self._watched.pop(token, None)

    def fire_expired(self) -> int:
        """Call every expired deadline's (and met condition's) function; how many fired."""
        now = self._clock()
        with self._lock:
            due = [t for t, (deadline, _) in self._armed.items() if deadline <= now]
            expired = [self._armed.pop(t)[1] for t in due]
            met = [t for t, (condition, _) in self._watched.items() if condition()]
            expired += [self._watched.pop(t)[1] for t in met]
        for expire in expired:
            expire()
        return len(expired)

    def _loop(self) -> None:
        last: dict[int, float] = {}
        while not self._stop.wait(self.tick_s):
            self.fire_expired()
            now = self._clock()
            with self._lock:
                chores = list(enumerate(self._chores))
            for i, (period, chore) in chores:
                if now - last.get(i, 0.0) >= period:
                    last[i] = now
                    try:
                        chore()
                    except Exception:  # a chore's bug must not stop the deadlines
                        log.exception("transport chore failed")

    def guarded(
        self, items: Iterator[T], seconds: float, expire: Callable[[], object]
    ) -> Iterator[T]:
        """`items`, with `expire` called when one `next` takes longer than `seconds`."""
        while True:
            token = self.arm(seconds, expire)
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.disarm(token)
            yield item

    def paced(
        self, items: Iterator[T], seconds: float, expire: Callable[[], object]
    ) -> Iterator[T]:
        """`items`, with `expire` called when the consumer is slow to ask for the next one.

        A response the peer does not read blocks the send; this bounds how long.
        """
        for item in items:
            token = self.arm(seconds, expire)
            try:
                yield item
            finally:
                self.disarm(token)


class PeerSlots:
    """Open calls per peer, at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    def acquire(self, peer_id: str) -> None:
        """Take a slot; LimitExceeded when the peer has `limit` calls open."""
        with self._lock:
            if self._open[peer_id] >= self.limit:
                raise LimitExceeded(
                    f"peer {peer_id} has {self.limit} calls open already "
                    "(MLNODE_GRPC_MAX_CALLS_PER_PEER)"
                )
            self._open[peer_id] += 1

    def release(self, peer_id: str) -> None:
        """Give a slot back."""
        with self._lock:
            self._open[peer_id] -= 1
            if self._open[peer_id] <= 0:
                del self._open[peer_id]

    def open_calls(self, peer_id: str) -> int:
        """Calls the peer has open."""
        with self._lock:
            return self._open[peer_id]
