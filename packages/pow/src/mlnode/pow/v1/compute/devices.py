"""Where the model runs: CPU, or CUDA GPUs grouped so that each group holds one model copy."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlnode.pow.v1.compute.params import ModelParams

#: Share of a GPU's memory the model and activations may use.
USABLE_FRACTION = 0.9
#: Activations, CUDA context and allocator slack reserved per GPU on top of the weights.
RESERVE_BYTES = 1 << 30


@dataclass(frozen=True)
class Gpu:
    """One CUDA device and its memory."""

    index: int
    total_bytes: int

    @property
    def usable_bytes(self) -> int:
        """Memory the model may take on this device."""
        return max(0, int(self.total_bytes * USABLE_FRACTION) - RESERVE_BYTES)


def group_gpus(gpus: list[Gpu], model_bytes: int) -> list[list[Gpu]]:
    """Disjoint groups of GPUs, each with room for one copy of the weights.

    GPUs are taken largest first, so big cards hold a copy alone and small ones pool their memory.
    GPUs left over that cannot hold a copy together stay unused.
    """
    groups: list[list[Gpu]] = []
    current: list[Gpu] = []
    for gpu in sorted(gpus, key=lambda g: (-g.total_bytes, g.index)):
        current.append(gpu)
        if sum(g.usable_bytes for g in current) >= model_bytes:
            groups.append(current)
            current = []
    return groups


def activation_bytes_per_nonce(params: ModelParams) -> int:
    """Peak activation bytes one nonce needs in the forward pass (generous estimate)."""
    seq, dim, hidden = params.seq_len, params.dim, params.ffn_hidden_dim
    f16, f32 = 2, 4
    hidden_states = seq * (8 * dim + 3 * hidden) * f16
    attention = params.n_heads * seq * seq * (2 * f16 + 2 * f32)
    rope = 4 * seq * dim * f32
    logits = 2 * params.vocab_size * f32
    return 2 * (hidden_states + attention + rope + logits)


def fit_batch_size(requested: int, params: ModelParams, free_bytes: int) -> int:
    """The requested batch size, lowered so that its activations fit in `free_bytes`."""
    fitting = math.floor(free_bytes * USABLE_FRACTION / activation_bytes_per_nonce(params))
    return max(1, min(requested, fitting))


def plan_groups(device: str, params: ModelParams) -> list[list[str]]:
    """Device names of each model copy: one CPU copy, or one copy per GPU group.

    `device` is "cpu", "cuda" or "auto" (CUDA when available).
    """
    import torch

    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return [["cpu"]]
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    gpus = [
        Gpu(i, torch.cuda.get_device_properties(i).total_memory)
        for i in range(torch.cuda.device_count())
    ]
    groups = group_gpus(gpus, params.parameter_bytes())
    if not groups:
        total = sum(g.usable_bytes for g in gpus)
        raise RuntimeError(
            f"the model needs {params.parameter_bytes()} bytes; all GPUs together offer {total}"
        )
    return [[f"cuda:{g.index}" for g in group] for group in groups]


def cpu_matmul_type(requested: str, params: ModelParams, available_bytes: int) -> str:
    """The CPU matmul operand type to use: f32 only when its 4-byte weights fit in memory."""
    if requested == "f32" and 4 * params.total_parameters() > available_bytes * USABLE_FRACTION:
        return "f16"
    return requested
