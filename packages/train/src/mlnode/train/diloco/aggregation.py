"""The outer step's aggregation of pseudo-gradients: mean or a robust rule (`mlnode.common.robust`).

Each rule reduces one tensor (or one block of a chunked exchange) over the contributions, given
in rank order so that every worker gets the same bits. With too few contributions for a rule to
tolerate `max_faulty` bad ones, it falls back to the coordinate-wise median.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from math import prod

import torch

from mlnode.common import robust
from mlnode.train.diloco.math import Tensors, weighted_mean


class Aggregation(StrEnum):
    """How pseudo-gradients are combined."""

    MEAN = "mean"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"
    CENTERED_CLIP = "centered_clip"
    KRUM = "krum"


def effective(method: Aggregation, n: int, max_faulty: int) -> Aggregation:
    """The rule used for `n` contributions: trimmed mean needs n > 2f, Multi-Krum n >= 2f + 3.

    With two or fewer no rule tells a bad one from a good one, so they are averaged.
    """
    if n <= 2:
        return Aggregation.MEAN
    if method is Aggregation.TRIMMED_MEAN and n <= 2 * max_faulty:
        return Aggregation.MEDIAN
    if method is Aggregation.KRUM and n < 2 * max_faulty + 3:
        return Aggregation.MEDIAN
    return method


def combine(
    tensors: Sequence[torch.Tensor], method: Aggregation, max_faulty: int, clip_factor: float
) -> torch.Tensor:
    """Aggregate same-shape fp32 tensors (rank order) with `method`."""
    rule = effective(method, len(tensors), max_faulty)
    if rule is Aggregation.MEAN:
        return weighted_mean(tensors, [1.0] * len(tensors))
    stack = torch.stack([t.float() for t in tensors])
    if rule is Aggregation.MEDIAN:
        return robust.median(stack)
    if rule is Aggregation.TRIMMED_MEAN:
        return robust.trimmed_mean_k(stack, max_faulty)
    if rule is Aggregation.CENTERED_CLIP:
        return robust.centered_clip(stack, clip_factor)
    return robust.krum(stack, max_faulty, to_keep=len(tensors) - max_faulty)


def combine_all(
    contributions: Mapping[int, Tensors],
    method: Aggregation,
    max_faulty: int,
    clip_factor: float,
) -> Tensors:
    """Aggregate whole pseudo-gradients (rank -> tensors), tensor by tensor."""
    ranks = sorted(contributions)
    names = contributions[ranks[0]]
    return {
        name: combine([contributions[r][name] for r in ranks], method, max_faulty, clip_factor)
        for name in names
    }


def sparse_mean(
    contributions: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int, shape: tuple[int, ...]
) -> torch.Tensor:
    """Mean of `count` sparse contributions (flat indices, values), added one at a time in order.

    Only the result is dense: each contribution is scattered into it as it comes.
    """
    acc = torch.zeros(prod(shape), dtype=torch.float32)
    for indices, values in contributions:
        acc.index_add_(0, indices, values.float(), alpha=1.0 / count)
    return acc.reshape(shape)
