"""Deadlines and rate floors on server calls, and the admission of calls to the transfer pool.

The sync gRPC server blocks a worker thread while a handler waits for the peer's next message,
with no deadline of its own. `Watchdog` cancels a call whose armed deadline passed (which wakes
the blocked thread) or whose `RateFloor` says the peer moves too few bytes, and runs periodic
chores (the inbox's expiry). `PeerSlots` admits authenticated calls to the transfer pool: at most
`limit` per peer, and once only `reserved` threads are free, only a peer's first call, so peers
that already hold calls (colluding ones, say) never take the last threads from the others.
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
        self,
        items: Iterator[T],
        seconds: float,
        expire: Callable[[], object],
        meter: RateFloor | None = None,
        size: Callable[[T], int] = lambda _: 0,
    ) -> Iterator[T]:
        """`items`, with `expire` called when one `next` takes longer than `seconds`.

        The time spent in `next` is the peer's: `meter` counts it with each item's `size`.
        """
        while True:
            token = self.arm(seconds, expire)
            if meter is not None:
                meter.wait_begins()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.disarm(token)
            if meter is not None:
                meter.wait_ends(size(item))
            yield item

    def paced(
        self,
        items: Iterator[T],
        seconds: float,
        expire: Callable[[], object],
        meter: RateFloor | None = None,
        size: Callable[[T], int] = lambda _: 0,
    ) -> Iterator[T]:
        """`items`, with `expire` called when the consumer is slow to ask for the next one.

        A response the peer does not read blocks the send; this bounds how long. The time the
        consumer takes is the peer's: `meter` counts it with each item's `size`.
        """
        for item in items:
            token = self.arm(seconds, expire)
            if meter is not None:
                meter.wait_begins()
            try:
                yield item
            finally:
                self.disarm(token)
            if meter is not None:
                meter.wait_ends(size(item))


class RateFloor:
    """Bytes per second of the peer's time (its waits), judged over consecutive windows.

    Only the time spent waiting on the peer counts (for its next message, or for it to read
    ours), so a slow producer on this side never makes an honest peer look slow. `too_slow` is
    true once a window of `window_s` of the peer's time moved fewer than `floor * window_s` bytes.
    """

    def __init__(
        self, floor: float, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.floor = floor
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._peer_time = 0.0
        self._since: float | None = None
        self._bytes = 0
        self._mark = (0.0, 0)
        self.slow_bytes = 0

    def wait_begins(self) -> None:
        """The call now waits on the peer."""
        with self._lock:
            self._since = self._clock()

    def wait_ends(self, nbytes: int) -> None:
        """The wait ended with `nbytes` moved."""
        with self._lock:
            if self._since is not None:
                self._peer_time += self._clock() - self._since
                self._since = None
            self._bytes += nbytes

    def too_slow(self) -> bool:
        """True once the last full window moved too few bytes (checked by the watchdog)."""
        with self._lock:
            now = self._peer_time + (self._clock() - self._since if self._since else 0.0)
            mark_time, mark_bytes = self._mark
            if now - mark_time < self.window_s:
                return False
            moved = self._bytes - mark_bytes
            if moved < self.floor * self.window_s:
                self.slow_bytes = moved
                return True
            self._mark = (now, self._bytes)
            return False


class PeerSlots:
    """Admission to the transfer pool: at most `limit` calls per peer, `reserved` kept free.

    The pool has `pool` threads. While more than `reserved` are free, a peer may open up to
    `limit` calls; once only `reserved` are free, a peer with a call open is refused, so the last
    threads go to peers that hold none (an honest peer beside colluding ones). A peer's first call
    is never refused for the pool's sake: past `pool` it waits for a thread, as before. `pool` 0
    turns the reserve off.
    """

    def __init__(self, limit: int, pool: int = 0, reserved: int = 0) -> None:
        self.limit = limit
        self.pool = pool
        self.reserved = reserved
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self._total = 0

    def acquire(self, peer_id: str) -> None:
        """Take a slot; LimitExceeded when the peer's share or the pool is used up."""
        with self._lock:
            mine = self._open[peer_id]
            if mine >= self.limit:
                raise LimitExceeded(
                    f"peer {peer_id} has {self.limit} calls open already "
                    "(MLNODE_GRPC_MAX_CALLS_PER_PEER)"
                )
            if self.pool and mine and self._total >= self.pool - self.reserved:
                free = max(0, self.pool - self._total)
                raise LimitExceeded(
                    f"only {free} transfer threads are free; they are kept for peers without a "
                    "call open (MLNODE_GRPC_RESERVED_WORKERS)"
                )
            self._open[peer_id] += 1
            self._total += 1

    def release(self, peer_id: str) -> None:
        """Give a slot back."""
        with self._lock:
            self._open[peer_id] -= 1
            self._total -= 1
            if self._open[peer_id] <= 0:
                del self._open[peer_id]

    def open_calls(self, peer_id: str | None = None) -> int:
        """Calls the peer has open (every peer's when None)."""
        with self._lock:
            return self._total if peer_id is None else self._open[peer_id]
