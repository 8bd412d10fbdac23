"""Each fusion method against closed-form expectations on small tensors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from mlnode.fuse.methods.base import FusionMethod, MergeInputs
from mlnode.fuse.methods.registry import REGISTRY, get_method
from mlnode.fuse.methods.slerp import slerp
from mlnode.fuse.methods.task_arithmetic import magnitude_prune, random_drop
from mlnode.fuse.methods.validate import resolve

T = torch.tensor


def merge(
    method: str,
    tensors: list[torch.Tensor],
    base: torch.Tensor | None = None,
    weights: list[float | None] | None = None,
    name: str = "w",
    **params: Any,
) -> torch.Tensor:
    m: FusionMethod = get_method(method)
    weights = weights if weights is not None else [None] * len(tensors)
    resolved = resolve(m, params, weights, base is not None)
    return m.merge(MergeInputs(tensors, base, resolved.params, resolved.tensor_params, name=name))


def test_linear_normalized_weighted_mean() -> None:
    out = merge("linear", [T([1.0, 2.0]), T([3.0, 6.0])], weights=[1.0, 3.0])
    assert torch.allclose(out, T([2.5, 5.0]))


def test_linear_without_normalize_is_weighted_sum() -> None:
    out = merge("linear", [T([1.0]), T([3.0])], weights=[2.0, 1.0], normalize=False)
    assert torch.allclose(out, T([5.0]))


def test_fedavg_weights_by_sample_count() -> None:
    out = merge("fedavg", [T([0.0, 10.0]), T([10.0, 0.0])], weights=[100.0, 300.0])
    assert torch.allclose(out, T([7.5, 2.5]))


def test_task_arithmetic_adds_scaled_task_vectors() -> None:
    base = T([1.0, 1.0])
    out = merge("task_arithmetic", [T([2.0, 1.0]), T([1.0, 3.0])], base=base, **{"lambda": 0.5})  # type: ignore[arg-type]
    assert torch.allclose(out, T([1.5, 2.0]))


def test_ties_trims_elects_sign_and_takes_disjoint_mean() -> None:
    base = torch.zeros(4)
    a = T([1.0, 1.0, 0.1, 2.0])
    b = T([1.0, -3.0, 0.0, 4.0])
    c = T([-1.0, 1.0, 0.0, -0.2])
    out = merge("ties", [a, b, c], base=base, density=1.0)
    # col 0: sum +1 -> mean of agreeing (+1, +1); col 1: sum -1 -> only -3 agrees;
    # col 2: only a is nonzero; col 3: sum +5.8 -> mean(2, 4)
    assert torch.allclose(out, T([1.0, -3.0, 0.1, 3.0]))


def test_ties_density_keeps_the_largest_magnitudes() -> None:
    base = torch.zeros(4)
    out = merge("ties", [T([4.0, -3.0, 0.5, 0.2])], base=base, density=0.5)
    assert torch.equal(out, T([4.0, -3.0, 0.0, 0.0]))


def test_magnitude_prune_keeps_ceil_density_entries() -> None:
    pruned = magnitude_prune(T([1.0, -5.0, 3.0, 0.5, 2.0]), 0.5)
    assert torch.equal(pruned, T([0.0, -5.0, 3.0, 0.0, 2.0]))


def test_dare_rescaling_keeps_the_expectation() -> None:
    delta = torch.full((200_000,), 0.3)
    dropped = random_drop(delta, 0.25, torch.Generator().manual_seed(7))
    kept = dropped[dropped != 0]
    assert torch.allclose(kept, torch.full_like(kept, 0.3 / 0.25))
    assert 0.24 < kept.numel() / delta.numel() < 0.26
    assert dropped.mean().item() == pytest.approx(0.3, rel=0.02)


def test_dare_linear_is_seeded_and_unbiased() -> None:
    base = torch.ones(100_000)
    source = base + 0.5
    first = merge("dare_linear", [source], base=base, density=0.5, seed=3)
    again = merge("dare_linear", [source], base=base, density=0.5, seed=3)
    other = merge("dare_linear", [source], base=base, density=0.5, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert set(first.unique().tolist()) == {1.0, 2.0}
    assert (first - base).mean().item() == pytest.approx(0.5, rel=0.02)


def test_dare_ties_with_full_density_equals_ties() -> None:
    base = torch.zeros(3)
    tensors = [T([1.0, -2.0, 3.0]), T([-3.0, 1.0, 1.0])]
    dare = merge("dare_ties", tensors, base=base, density=1.0)
    ties = merge("ties", tensors, base=base, density=1.0)
    assert torch.equal(dare, ties)


def test_slerp_end_points() -> None:
    a, b = T([1.0, 2.0, 0.0]), T([0.0, 1.0, 3.0])
    assert torch.allclose(merge("slerp", [a, b], t=0.0), a)
    assert torch.allclose(merge("slerp", [a, b], t=1.0), b)


def test_slerp_keeps_the_norm_at_half_way() -> None:
    a, b = T([3.0, 0.0]), T([0.0, 3.0])
    mid = merge("slerp", [a, b], t=0.5)
    assert mid.norm().item() == pytest.approx(3.0)
    assert torch.allclose(mid, T([3.0, 3.0]) / math.sqrt(2))
    assert torch.lerp(a, b, 0.5).norm().item() < 2.2  # what linear would give


def test_slerp_falls_back_to_linear_for_parallel_tensors() -> None:
    a = T([1.0, 2.0])
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)
    assert torch.allclose(slerp(torch.zeros(2), a, 0.25), 0.25 * a)


def test_median_takes_the_middle() -> None:
    out = merge("median", [T([1.0, 9.0]), T([100.0, 2.0]), T([3.0, 4.0])])
    assert torch.equal(out, T([3.0, 4.0]))


def test_trimmed_mean_ignores_the_extremes() -> None:
    values = [T([v]) for v in (-1000.0, 1.0, 2.0, 3.0, 5000.0)]
    out = merge("trimmed_mean", values, trim_ratio=0.2)
    assert torch.allclose(out, T([2.0]))


def test_krum_ignores_the_outlier() -> None:
    honest = [T([1.0, 1.0]), T([1.1, 0.9]), T([0.9, 1.1]), T([1.0, 1.05]), T([1.05, 1.0])]
    outlier = T([50.0, -40.0])
    out = merge("krum", [outlier, *honest], f=1)
    assert any(torch.equal(out, h) for h in honest)


def test_multi_krum_averages_the_closest_sources() -> None:
    honest = [T([1.0]), T([1.2]), T([0.8]), T([1.0]), T([1.1])]
    out = merge("multi_krum", [T([-90.0]), *honest], f=1, m=5)
    assert torch.allclose(out, T([1.02]))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_is_documented(name: str) -> None:
    method = REGISTRY[name]
    assert method.pretty_name and method.reference_url.startswith("https://")
    assert all(p.description for p in method.parameters())


def test_linear_promotes_stored_dtypes_to_float32_exactly() -> None:
    sources = [torch.randn(64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    low = [s.to(torch.bfloat16) for s in sources]
    mixed = merge("linear", list(low), weights=[1.0, 2.0, 3.0])
    promoted = merge("linear", [t.float() for t in low], weights=[1.0, 2.0, 3.0])
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, promoted)
