"""Distance of permuted, normalised logits to the target (numpy, on CPU even on GPU nodes)."""

from __future__ import annotations

import numpy as np


def distances(logits: np.ndarray, permutations: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row distance: gather by permutation, normalise in f32, compare with target in f64.

    Reductions run along the last, contiguous axis, where numpy uses pairwise summation as the
    reference does.
    """
    permuted = np.take_along_axis(logits.astype(np.float32), permutations, axis=1)
    norm = np.sqrt(np.add.reduce(permuted * permuted, axis=1, keepdims=True))
    unit = (permuted / norm).astype(np.float64)
    diff = unit - target[None, :]
    result: np.ndarray = np.sqrt(np.add.reduce(diff * diff, axis=1))
    return result
