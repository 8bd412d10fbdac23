"""Weighted averages: linear (model soups) and FedAvg.

References: Wortsman et al., "Model soups" (ICML 2022), https://arxiv.org/abs/2203.05482;
McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data"
(AISTATS 2017), https://arxiv.org/abs/1602.05629.
"""

from __future__ import annotations

import torch

from mlnode.fuse.methods.base import FusionMethod, MergeInputs, ParamDef


class Linear(FusionMethod):
    """`sum(w_i * x_i)`, divided by `sum(w_i)` when normalizing (FedAvg always normalizes)."""

    promotes_inputs = True

    def __init__(self, name: str, pretty_name: str, reference_url: str, fedavg: bool) -> None:
        self.name = name
        self.pretty_name = pretty_name
        self.reference_url = reference_url
        self.fedavg = fedavg

    def parameters(self) -> list[ParamDef]:
        """`normalize` for linear; FedAvg has none."""
        if self.fedavg:
            return []
        return [ParamDef("normalize", bool, default=True, description="Divide by sum(w).")]

    def tensor_parameters(self) -> list[ParamDef]:
        """The source weight; for FedAvg, the source's sample count (required)."""
        if self.fedavg:
            return [ParamDef("weight", required=True, minimum=0.0, description="Sample count.")]
        return super().tensor_parameters()

    def merge(self, inputs: MergeInputs) -> torch.Tensor:
        """Weighted sum in float32 (each source promoted as it is added), optionally normalized."""
        tensors = inputs.tensors
        weights = [float(p["weight"]) for p in inputs.tensor_params]
        out = torch.empty(tensors[0].shape, dtype=torch.float32, device=tensors[0].device)
        out.copy_(tensors[0]).mul_(weights[0])
        # One float32 scratch for every other source: converting into reused memory is several
        # times cheaper than a fresh float32 copy per source (page faults dominate).
        scratch = torch.empty_like(out) if len(tensors) > 1 else out
        for i in range(1, len(tensors)):
            out.add_(scratch.copy_(tensors[i]), alpha=weights[i])
        if self.fedavg or inputs.params.get("normalize", True):
            out.div_(sum(weights))
        return out


LINEAR = Linear("linear", "Linear", "https://arxiv.org/abs/2203.05482", fedavg=False)
FEDAVG = Linear("fedavg", "FedAvg", "https://arxiv.org/abs/1602.05629", fedavg=True)
