"""The loss-scored gate: keep only the pseudo-gradients that lower the loss on held-out data.

As open-network DiLoCo runs do (a validator scores each contribution by the loss change it
causes before aggregating), every worker applies each received pseudo-gradient to the last
synced weights, measures the loss on a small held-out batch against the loss before, and lets
only the best `keep` into the aggregation (`agreement.select_scored`). Every worker scores on the
same batch of its eval tail, chosen by round, so workers sharing a corpus keep the same set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mlnode.train.diloco.agreement import gate_keep, select_scored
from mlnode.train.diloco.math import Tensors
from mlnode.train.inner import InnerLoop


@dataclass(frozen=True)
class GateResult:
    """Scores (rank -> loss change, lower is better) and the ranks kept."""

    scores: dict[int, float]
    kept: list[int]


class LossGate:
    """Scores pseudo-gradients on batches of held-out windows."""

    def __init__(
        self, inner: InnerLoop, windows: torch.Tensor, batch: int, keep: int | None, faulty: int
    ):
        self.inner = inner
        self.windows = windows
        self.batch = min(batch, int(windows.shape[0]))
        self.keep = keep
        self.faulty = faulty

    @property
    def usable(self) -> bool:
        """False without held-out data (eval_fraction 0): then nothing is gated."""
        return self.batch > 0

    def batch_of(self, round_index: int) -> torch.Tensor:
        """The held-out windows of `round_index` (a rotating slice of the eval tail)."""
        n = int(self.windows.shape[0])
        start = (round_index * self.batch) % n
        return self.windows[(torch.arange(self.batch) + start) % n]

    def _loss(self, weights: Tensors, batch: torch.Tensor) -> float:
        self.inner.load_weights(weights)
        loss = self.inner.evaluate(batch)
        return float("nan") if loss is None else loss

    def score(
        self, synced: Tensors, contributions: Mapping[int, Tensors], round_index: int
    ) -> GateResult:
        """Loss change of each contribution applied alone (weights = synced - pseudo-gradient).

        Leaves the model holding other weights: the caller loads the new synced weights next.
        """
        batch = self.batch_of(round_index)
        before = self._loss(synced, batch)
        scores = {}
        for rank in sorted(contributions):
            delta = contributions[rank]
            moved = {n: w - delta[n].to(w.device) for n, w in synced.items()}
            scores[rank] = self._loss(moved, batch) - before
        keep = gate_keep(self.keep, len(contributions), self.faulty)
        return GateResult(scores=scores, kept=select_scored(scores, keep))
