"""Checks on received proof batches and the fraud verdict (one-sided binomial test)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

#: Chance that an honest nonce recomputes above r_target elsewhere (GPU vs CPU numerics).
PROBABILITY_MISMATCH = 5e-4
MAX_NONCE = 2**63 - 1


class MalformedBatch(ValueError):
    """A batch that cannot be judged; `param` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        """Keep the field name next to the message."""
        super().__init__(message)
        self.param = param


def check_batch(
    nonces: Sequence[int], dist: Sequence[float], block_hash: str, loaded_block_hash: str
) -> None:
    """Raise `MalformedBatch` for anything that makes the batch unjudgeable."""
    if block_hash != loaded_block_hash:
        raise MalformedBatch(
            f"block_hash {block_hash!r} is not the loaded block hash {loaded_block_hash!r}",
            "block_hash",
        )
    if len(nonces) != len(dist):
        raise MalformedBatch(
            f"{len(nonces)} nonces but {len(dist)} distances; they must pair up", "dist"
        )
    if not nonces:
        raise MalformedBatch("the batch has no nonces", "nonces")
    negative = [n for n in nonces if n < 0]
    if negative:
        raise MalformedBatch(f"negative nonces: {negative[:5]}", "nonces")
    huge = [n for n in nonces if n > MAX_NONCE]
    if huge:
        raise MalformedBatch(f"nonces above the int64 range: {huge[:5]}", "nonces")
    if len(set(nonces)) != len(nonces):
        counts = Counter(nonces)
        duplicates = sorted(n for n, c in counts.items() if c > 1)
        raise MalformedBatch(f"duplicate nonces: {duplicates[:5]}", "nonces")
    bad = [i for i, d in enumerate(dist) if not math.isfinite(d)]
    if bad:
        raise MalformedBatch(f"non-finite distances at positions {bad[:5]}", "dist")


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating one batch."""

    n_invalid: int
    probability_honest: float
    fraud_detected: bool


def invalid_mask(claimed: Sequence[float], recomputed: np.ndarray, r_target: float) -> np.ndarray:
    """Nonces that fail: recomputed above r_target (or not a number), or claimed at or above it.

    A claim at or above r_target is no proof at all; the reference asserts on it instead.
    """
    claimed_arr = np.asarray(claimed, dtype=np.float64)
    return ~(recomputed <= r_target) | (claimed_arr >= r_target)


def probability_honest(n_invalid: int, n_total: int) -> float:
    """P[X >= n_invalid] for X ~ Binomial(n_total, PROBABILITY_MISMATCH)."""
    if n_invalid == 0:
        return 1.0
    return float(binomtest(n_invalid, n_total, PROBABILITY_MISMATCH, alternative="greater").pvalue)


def judge(n_invalid: int, n_total: int, fraud_threshold: float) -> Verdict:
    """The verdict: fraud when the honest explanation is less likely than the threshold."""
    p = probability_honest(n_invalid, n_total)
    return Verdict(n_invalid=n_invalid, probability_honest=p, fraud_detected=p < fraud_threshold)
