"""Thread-safe counters of the PoW worker and a sliding-window rate."""

from __future__ import annotations

import threading
import time
from collections import deque

RATE_WINDOW_S = 10.0


class PowStats:
    """Nonces, proofs and validations: per job (reset at init) and per process (for metrics)."""

    def __init__(self) -> None:
        """All counters at zero."""
        self._lock = threading.Lock()
        self._window: deque[tuple[float, int]] = deque()
        self.nonces_checked = self.proofs_found = self.batches_validated = 0
        self.total_nonces = self.total_proofs = self.total_validated = self.total_frauds = 0
        self.last_error: str | None = None

    def reset_job(self) -> None:
        """A new init: per-job counters back to zero."""
        with self._lock:
            self.nonces_checked = self.proofs_found = self.batches_validated = 0
            self._window.clear()
            self.last_error = None

    def computed(self, nonces: int, proofs: int) -> None:
        """A generation batch finished."""
        with self._lock:
            self.nonces_checked += nonces
            self.proofs_found += proofs
            self.total_nonces += nonces
            self.total_proofs += proofs
            self._window.append((time.monotonic(), nonces))

    def validated(self, nonces: int, fraud: bool) -> None:
        """A received batch was judged."""
        with self._lock:
            self.batches_validated += 1
            self.total_validated += 1
            self.total_frauds += int(fraud)
            self.total_nonces += nonces
            self._window.append((time.monotonic(), nonces))

    def error(self, message: str) -> None:
        """Remember the latest error."""
        with self._lock:
            self.last_error = message

    def rate(self) -> float:
        """Nonces per second over the last few seconds."""
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0][0] > RATE_WINDOW_S:
                self._window.popleft()
            if not self._window:
                return 0.0
            span = max(now - self._window[0][0], 1.0)
            return sum(n for _, n in self._window) / span
