"""Figures of a running training job, written by the worker thread and read by status routes."""

from __future__ import annotations

import threading
from collections import deque
from typing import Unpack

from mlnode.train.schemas import (
    LossPoint,
    RoundHash,
    TrainFigures,
    TrainFigureUpdate,
    TrainJobProgress,
)

HISTORY = 500


class TrainProgress:
    """Thread-safe figures and the loss history of one job."""

    def __init__(self, task_id: str, rank: int, world_size: int) -> None:
        self._lock = threading.Lock()
        self._figures = TrainFigures(task_id=task_id, rank=rank, world_size=world_size)
        self._history: deque[LossPoint] = deque(maxlen=HISTORY)
        self._hashes: deque[RoundHash] = deque(maxlen=HISTORY)

    def set(self, **fields: Unpack[TrainFigureUpdate]) -> None:
        """Overwrite some figures (names and types are checked by mypy and on assignment)."""
        with self._lock:
            for name, value in fields.items():
                setattr(self._figures, name, value)

    def add_bytes(self, sent: int, received: int) -> None:
        """Count transport payload bytes."""
        with self._lock:
            self._figures.bytes_sent += sent
            self._figures.bytes_received += received

    def record_round(
        self, outer_round: int, loss: float | None, eval_loss: float | None, digest: str
    ) -> None:
        """Append one finished outer round to the history."""
        point = LossPoint(outer_round=outer_round, loss=loss, eval_loss=eval_loss)
        with self._lock:
            self._history.append(point)
            self._hashes.append(RoundHash(outer_round=outer_round, sha256=digest))

    def snapshot(self) -> TrainJobProgress:
        """A copy for status bodies."""
        with self._lock:
            return TrainJobProgress(
                **self._figures.model_dump(),
                loss_history=list(self._history),
                weights_history=list(self._hashes),
            )
