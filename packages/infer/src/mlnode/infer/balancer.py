"""Least-connections choice among engine instances; pure (no I/O, no clock, no locks).

The set of backends is swapped as one immutable snapshot when the health loop sees a change.
Counts of requests in flight outlive a backend's removal until they drain, so a backend that
flaps out and back in keeps an honest count, and releasing an unknown backend is a no-op.
All calls come from one event loop, so no locking is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    """One engine instance as the proxy sees it."""

    key: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL of the engine."""
        return f"http://{self.host}:{self.port}"


class LeastConnections:
    """Pick the healthy backend with the fewest requests in flight (ties rotate)."""

    def __init__(self) -> None:
        self._backends: tuple[Backend, ...] = ()
        self._in_flight: dict[Backend, int] = {}
        self._turn = 0

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The current snapshot."""
        return self._backends

    def set_backends(self, backends: Iterable[Backend]) -> None:
        """Replace the snapshot; counts of backends still busy are kept until they drain."""
        self._backends = tuple(backends)
        live = set(self._backends)
        self._in_flight = {b: n for b, n in self._in_flight.items() if n > 0 or b in live}

    def acquire(self) -> Backend | None:
        """The least busy backend, counted as one more request in flight; None when empty."""
        backends = self._backends
        if len(backends) == 1:
            chosen = backends[0]
            self._in_flight[chosen] = self._in_flight.get(chosen, 0) + 1
            return chosen
        if not backends:
            return None
        self._turn = (self._turn + 1) % len(backends)
        order = backends[self._turn :] + backends[: self._turn]
        chosen = min(order, key=lambda b: self._in_flight.get(b, 0))
        self._in_flight[chosen] = self._in_flight.get(chosen, 0) + 1
        return chosen

    def release(self, backend: Backend) -> None:
        """One request on `backend` finished; unknown backends are ignored."""
        count = self._in_flight.get(backend)
        if count is None:
            return
        if count <= 1 and backend not in self._backends:
            del self._in_flight[backend]
        else:
            self._in_flight[backend] = max(count - 1, 0)

    def in_flight(self, backend: Backend) -> int:
        """Requests in flight on one backend."""
        return self._in_flight.get(backend, 0)

    def total_in_flight(self) -> int:
        """Requests in flight on every backend, removed ones included."""
        return sum(self._in_flight.values())
