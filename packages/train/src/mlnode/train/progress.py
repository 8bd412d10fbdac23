"""Figures of a running training job, written by the worker thread and read by status routes."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

HISTORY = 500


class TrainProgress:
    """Thread-safe counters and the loss history of one job."""

    def __init__(self, task_id: str, rank: int, world_size: int) -> None:
        self._lock = threading.Lock()
        self._fields: dict[str, Any] = {
            "task_id": task_id,
            "rank": rank,
            "world_size": world_size,
            "inner_step": 0,
            "outer_round": 0,
            "total_rounds": None,
            "tokens_per_s": None,
            "bytes_sent": 0,
            "bytes_received": 0,
            "peers_alive": [],
            "round_failures": {},
            "weights_sha256": None,
            "weights_agree": None,
            "resumed_from": None,
            "pulled_from": None,
            "last_checkpoint": None,
            "local_ranks": [],
            "local_weights_agree": None,
        }
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._hashes: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    def set(self, **fields: Any) -> None:
        """Overwrite some figures."""
        with self._lock:
            self._fields.update(fields)

    def add_bytes(self, sent: int, received: int) -> None:
        """Count transport payload bytes."""
        with self._lock:
            self._fields["bytes_sent"] += sent
            self._fields["bytes_received"] += received

    def record_round(
        self, outer_round: int, loss: float | None, eval_loss: float | None, digest: str
    ) -> None:
        """Append one finished outer round to the history."""
        with self._lock:
            self._history.append({"outer_round": outer_round, "loss": loss, "eval_loss": eval_loss})
            self._hashes.append({"outer_round": outer_round, "sha256": digest})

    def snapshot(self) -> dict[str, Any]:
        """A copy for status bodies."""
        with self._lock:
            return {
                **self._fields,
                "loss_history": list(self._history),
                "weights_history": list(self._hashes),
            }
