"""Task vectors (`x_i - base`), optionally sparsified, combined with or without sign consensus.

One family gives four methods: task arithmetic (Ilharco et al., ICLR 2023,
https://arxiv.org/abs/2212.04089), TIES (Yadav et al., NeurIPS 2023,
https://arxiv.org/abs/2306.01708: trim by magnitude, elect a sign, disjoint mean), and DARE
(Yu et al., ICML 2024, https://arxiv.org/abs/2311.03099: drop at random, rescale by
1 / density) in its linear and TIES forms.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import torch

from mlnode.fuse.methods.base import FusionMethod, MergeInputs, ParamDef


class Sparsify(StrEnum):
    """How a task vector is thinned before merging."""

    NONE = "none"
    MAGNITUDE = "magnitude"
    RANDOM = "random"


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `ceil(density * n)` largest-magnitude entries, zero the rest."""
    flat = delta.reshape(-1)
    keep = max(1, int(torch.ceil(torch.tensor(density * flat.numel())).item()))
    if keep >= flat.numel():
        return delta
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.abs().topk(keep, sorted=False).indices] = True
    return (flat * mask).reshape(delta.shape)


def random_drop(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density` and divide the kept ones by `density`."""
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator) < density
    return delta * keep / density


def tensor_seed(seed: int, name: str, index: int) -> int:
    """A seed per (fusion seed, tensor, source): the same fusion draws the same masks."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 101 + index) % (2**63)


def elect_and_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES: the sign of the weighted sum wins; average only the entries that agree with it."""
    weighted = [d * w for d, w in zip(deltas, weights, strict=True)]
    sign = torch.sign(torch.stack(weighted).sum(dim=0))
    total = torch.zeros_like(deltas[0])
    weight_sum = torch.zeros_like(deltas[0])
    for delta, wd, w in zip(deltas, weighted, weights, strict=True):
        agrees = (torch.sign(delta) == sign) & (delta != 0)
        total += wd * agrees
        weight_sum += agrees * w
    return torch.where(weight_sum > 0, total / weight_sum.clamp_min(1e-30), 0.0)


class TaskArithmetic(FusionMethod):
    """`base + lambda * combine(sparsify(x_i - base))`."""

    requires_base = True

    def __init__(
        self, name: str, pretty_name: str, url: str, consensus: bool, sparsify: Sparsify
    ) -> None:
        self.name = name
        self.pretty_name = pretty_name
        self.reference_url = url
        self.consensus = consensus
        self.sparsify = sparsify

    def parameters(self) -> list[ParamDef]:
        """lambda; density when sparsifying; seed for random drops; normalize without consensus."""
        defs = [ParamDef("lambda", default=1.0, description="Scale of the merged task vector.")]
        if self.sparsify is not Sparsify.NONE:
            defs.append(
                ParamDef("density", required=True, minimum=0.0, maximum=1.0, description="Kept.")
            )
        if self.sparsify is Sparsify.RANDOM:
            defs.append(ParamDef("seed", int, default=0, minimum=0, description="Drop seed."))
        if not self.consensus:
            defs.append(ParamDef("normalize", bool, default=False, description="Divide by sum(w)."))
        return defs

    def merge(self, inputs: MergeInputs) -> torch.Tensor:
        """Merge one tensor's task vectors onto the base."""
        base, params = inputs.base, inputs.params
        assert base is not None, "validated: task arithmetic methods need a base"
        weights = [float(p["weight"]) for p in inputs.tensor_params]
        deltas = [
            self._thin(t - base, params, inputs.name, i) for i, t in enumerate(inputs.tensors)
        ]
        if self.consensus:
            merged = elect_and_merge(deltas, weights)
        else:
            merged = torch.zeros_like(base)
            for delta, weight in zip(deltas, weights, strict=True):
                merged.add_(delta, alpha=weight)
            if params["normalize"]:
                merged.div_(sum(weights))
        return base + float(params["lambda"]) * merged

    def _thin(
        self, delta: torch.Tensor, params: Mapping[str, Any], name: str, index: int
    ) -> torch.Tensor:
        if self.sparsify is Sparsify.MAGNITUDE:
            return magnitude_prune(delta, float(params["density"]))
        if self.sparsify is Sparsify.RANDOM:
            generator = torch.Generator().manual_seed(tensor_seed(params["seed"], name, index))
            return random_drop(delta, float(params["density"]), generator)
        return delta


TASK_ARITHMETIC = TaskArithmetic(
    "task_arithmetic", "Task Arithmetic", "https://arxiv.org/abs/2212.04089", False, Sparsify.NONE
)
TIES = TaskArithmetic("ties", "TIES", "https://arxiv.org/abs/2306.01708", True, Sparsify.MAGNITUDE)
DARE_LINEAR = TaskArithmetic(
    "dare_linear", "DARE (linear)", "https://arxiv.org/abs/2311.03099", False, Sparsify.RANDOM
)
DARE_TIES = TaskArithmetic(
    "dare_ties", "DARE (TIES)", "https://arxiv.org/abs/2311.03099", True, Sparsify.RANDOM
)
