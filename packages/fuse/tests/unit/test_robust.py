"""Pure robust aggregators on hand-computed stacks."""

from __future__ import annotations

import pytest
import torch

from mlnode.fuse import robust


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
