"""Pure maths of DiLoCo's outer step; no transport, no I/O.

DiLoCo: Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language Models",
arXiv:2311.08105 (2023). Each worker runs H inner AdamW steps, the workers average their
pseudo-gradients (synced weights minus local weights) and apply them with an outer SGD with
Nesterov momentum. Int8 compression with error feedback follows Seide et al., "1-bit stochastic
gradient descent" (Interspeech 2014) and Karimireddy et al., "Error Feedback Fixes SignSGD"
(ICML 2019): what quantisation loses this round is added back before quantising the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from enum import StrEnum

import torch

from mlnode.train.diloco import sparse

Tensors = dict[str, torch.Tensor]

INT8_LEVELS = 127.0


class Compression(StrEnum):
    """How pseudo-gradients travel: fp32, fp16, int8 with one scale per tensor, or sparse."""

    NONE = "none"
    FP16 = "fp16"
    INT8 = "int8"
    #: Per-chunk top-k, 2-bit values and packed indices, with error feedback (`sparse`).
    SPARSELOCO = "sparseloco"


def pseudo_gradient(
    synced: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]
) -> Tensors:
    """Outer gradient of one worker: the last synced weights minus its current weights, in fp32."""
    return {name: synced[name].float() - current[name].detach().float() for name in synced}


def weighted_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Mean of same-shape tensors weighted by `weights`, summed in the given order (fp32).

    Callers pass contributions in one agreed order (by rank) so that every worker gets the very
    same bits.
    """
    if not tensors or len(tensors) != len(weights):
        raise ValueError("weighted_mean needs one weight per tensor and at least one tensor")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    acc = torch.zeros_like(tensors[0], dtype=torch.float32)
    for tensor, weight in zip(tensors, weights, strict=True):
        acc.add_(tensor.float(), alpha=weight / total)
    return acc


def nesterov_outer_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum: torch.Tensor,
    *,
    lr: float,
    mu: float,
    nesterov: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One outer SGD step (PyTorch's SGD convention); returns new weights and momentum buffer.

    buf = mu * buf + g; step = g + mu * buf with Nesterov, else buf; w = w - lr * step.
    """
    buf = momentum.float() * mu + grad.float()
    step = grad.float() + buf * mu if nesterov else buf
    new_param = param.float() - step * lr
    return new_param.to(param.dtype), buf


def compress(
    tensor: torch.Tensor,
    mode: Compression,
    error: torch.Tensor | None = None,
    spec: sparse.SparseSpec | None = None,
) -> tuple[Tensors, torch.Tensor | None]:
    """Encode one fp32 tensor for the wire; returns the parts and the new error-feedback residual.

    Int8 and sparseloco keep a residual (`error` is what the previous rounds failed to send).
    """
    if mode is Compression.NONE:
        return {"v": tensor.float().contiguous()}, None
    if mode is Compression.FP16:
        return {"v": tensor.to(torch.float16).contiguous()}, None
    if mode is Compression.SPARSELOCO:
        agreed = spec or sparse.SparseSpec()
        target = tensor.float() if error is None else tensor.float() + agreed.error_decay * error
        parts = sparse.encode(target, agreed)
        indices, values = sparse.decode(parts, target.numel(), agreed)
        residual = target.clone()
        flat = residual.view(-1)
        flat[indices.to(flat.device)] -= values.to(flat.device)
        return parts, residual
    target = tensor.float() if error is None else tensor.float() + error
    peak = float(target.abs().max()) if target.numel() else 0.0
    scale = peak / INT8_LEVELS if peak > 0 else 1.0
    quantised = torch.clamp(torch.round(target / scale), -INT8_LEVELS, INT8_LEVELS).to(torch.int8)
    parts = {"q": quantised.contiguous(), "scale": torch.tensor(scale, dtype=torch.float32)}
    return parts, target - decompress(parts, mode)


def decompress(
    parts: Mapping[str, torch.Tensor],
    mode: Compression,
    shape: tuple[int, ...] = (),
    spec: sparse.SparseSpec | None = None,
) -> torch.Tensor:
    """Decode what `compress` produced back to fp32 (sparse needs the tensor's shape).

    Raises `sparse.InvalidSparse` for a sparse payload an honest encoder would not send.
    """
    if mode is Compression.SPARSELOCO:
        numel = int(torch.Size(shape).numel())
        indices, values = sparse.decode(dict(parts), numel, spec or sparse.SparseSpec())
        return sparse.densify(indices, values, shape)
    if mode is Compression.INT8:
        return parts["q"].float() * parts["scale"].float()
    return parts["v"].float()


def wire_bytes(parts: Mapping[str, torch.Tensor]) -> int:
    """Payload bytes of encoded parts."""
    return sum(t.numel() * t.element_size() for t in parts.values())


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in name order: equal iff bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
