"""Pure robust aggregators on hand-computed stacks."""

from __future__ import annotations

import pytest
import torch

from mlnode.common import robust


def test_weighted_mean() -> None:
    stack = torch.tensor([[0.0, 4.0], [2.0, 0.0]])
    assert torch.allclose(robust.weighted_mean(stack, [3.0, 1.0]), torch.tensor([0.5, 3.0]))


def test_median_of_an_even_count_is_the_mean_of_the_middle_pair() -> None:
    stack = torch.tensor([[1.0], [10.0], [3.0], [5.0]])
    assert torch.equal(robust.median(stack), torch.tensor([4.0]))


def test_trimmed_mean_refuses_to_trim_everything() -> None:
    with pytest.raises(ValueError, match="leaves nothing"):
        robust.trimmed_mean(torch.zeros(2, 3), 0.5)


def test_krum_scores_sum_the_nearest_distances() -> None:
    stack = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    dist = robust.pairwise_sq_distances(stack)
    assert dist[0, 3].item() == 100.0
    # n=4, f=1: each source sums its n - f - 2 = 1 nearest squared distance
    assert robust.krum_scores(dist, 1).tolist() == [1.0, 1.0, 4.0, 49.0]
    assert robust.krum_select(dist, 1, to_keep=2) == [0, 1]


def test_krum_needs_enough_sources() -> None:
    with pytest.raises(ValueError, match="more than f"):
        robust.krum_scores(torch.zeros(3, 3), 1)


def test_trimmed_mean_k_drops_k_per_end() -> None:
    stack = torch.tensor([[1.0], [2.0], [3.0], [100.0], [-50.0]])
    assert torch.equal(robust.trimmed_mean_k(stack, 1), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="leaves nothing"):
        robust.trimmed_mean_k(stack, 3)


def test_centered_clip_bounds_one_far_source() -> None:
    # Median (1, 0); distances 1, 0, 1, 1000 -> median radius 1; the far one is cut to length 1.
    stack = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [1.0, 1000.0]])
    result = robust.centered_clip(stack)
    assert torch.allclose(result, torch.tensor([1.0, 0.25]))


def test_centered_clip_keeps_sources_inside_the_radius() -> None:
    stack = torch.tensor([[1.0], [2.0], [3.0]])
    # Distances to the median 2 are 1, 0, 1 and the radius is 1: nothing is cut.
    assert torch.equal(robust.centered_clip(stack), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="positive"):
        robust.centered_clip(stack, 0.0)
