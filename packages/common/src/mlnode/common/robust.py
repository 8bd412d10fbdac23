"""Robust aggregation of stacked tensors: pure functions, no I/O (used by fuse and train).

The first dimension of every `stack` indexes the sources. References: coordinate-wise median and
trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018); Krum and Multi-Krum (Blanchard et al., "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS 2017); centered clipping (Karimireddy et al.,
"Learning from History for Byzantine Robust Optimization", ICML 2021), here centered on the
coordinate-wise median with a radius scaled to the sources' median distance from it.

Every function reduces the sources in index order, so equal inputs give bit-equal outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def weighted_mean(stack: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Sum of `weights[i] * stack[i]` divided by the sum of the weights."""
    w = torch.tensor(weights, dtype=stack.dtype).reshape(-1, *([1] * (stack.dim() - 1)))
    return (stack * w).sum(dim=0) / w.sum()


def median(stack: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median; the mean of the two middle values for an even count."""
    ordered = stack.sort(dim=0).values
    n = ordered.shape[0]
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_count(n: int, trim_ratio: float) -> int:
    """How many values are dropped at each end."""
    return int(n * trim_ratio)


def trimmed_mean(stack: torch.Tensor, trim_ratio: float) -> torch.Tensor:
    """Coordinate-wise mean after dropping the `int(n * trim_ratio)` lowest and highest values."""
    n = stack.shape[0]
    k = trimmed_count(n, trim_ratio)
    if n - 2 * k < 1:
        raise ValueError(f"trim ratio {trim_ratio} leaves nothing of {n} values")
    return trimmed_mean_k(stack, k)


def trimmed_mean_k(stack: torch.Tensor, k: int) -> torch.Tensor:
    """Coordinate-wise mean after dropping the `k` lowest and the `k` highest values."""
    n = stack.shape[0]
    if k < 0 or n - 2 * k < 1:
        raise ValueError(f"trimming {k} per end leaves nothing of {n} values")
    return stack.sort(dim=0).values[k : n - k].mean(dim=0)


def centered_clip(stack: torch.Tensor, radius_factor: float = 1.0) -> torch.Tensor:
    """Mean of the sources after pulling each within a radius of the coordinate-wise median.

    The radius is `radius_factor` times the median of the sources' distances to the median, so
    it follows the honest spread whatever the scale; a source farther out keeps its direction
    but only that length, which bounds what any one source can move the result.
    """
    if radius_factor <= 0:
        raise ValueError(f"radius_factor must be positive, got {radius_factor}")
    center = median(stack)
    n = stack.shape[0]
    deviations = (stack - center).reshape(n, -1)
    norms = deviations.double().pow(2).sum(dim=1).sqrt()
    radius = float(median(norms)) * radius_factor
    scale = torch.ones(n, dtype=torch.float64)
    far = norms > radius
    scale[far] = radius / norms[far]
    clipped = deviations * scale.to(stack.dtype).unsqueeze(1)
    acc = torch.zeros_like(center).reshape(-1)
    for row in clipped:
        acc.add_(row)
    return center + (acc / n).reshape(center.shape)


def pairwise_sq_distances(stack: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the flattened sources, as an n x n matrix."""
    n = stack.shape[0]
    flat = stack.reshape(n, -1)
    dist = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            d = float((flat[i] - flat[j]).double().pow(2).sum())
            dist[i, j] = dist[j, i] = d
    return dist


def krum_scores(sq_dist: torch.Tensor, num_malicious: int) -> torch.Tensor:
    """Each source's sum of squared distances to its `n - f - 2` nearest other sources."""
    n = sq_dist.shape[0]
    closest = n - num_malicious - 2
    if closest < 1:
        raise ValueError(f"krum needs more than f + 2 sources (n={n}, f={num_malicious})")
    without_self = sq_dist + torch.diag(torch.full((n,), float("inf"), dtype=sq_dist.dtype))
    return without_self.sort(dim=1).values[:, :closest].sum(dim=1)


def krum_select(sq_dist: torch.Tensor, num_malicious: int, to_keep: int) -> list[int]:
    """Indices of the `to_keep` sources with the lowest Krum scores (ties by index)."""
    scores = krum_scores(sq_dist, num_malicious)
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:to_keep])


def krum(stack: torch.Tensor, num_malicious: int, to_keep: int = 1) -> torch.Tensor:
    """Mean of the sources Multi-Krum keeps (`to_keep=1` is Krum: one source, unchanged)."""
    chosen = krum_select(pairwise_sq_distances(stack), num_malicious, to_keep)
    return stack[chosen].mean(dim=0)
