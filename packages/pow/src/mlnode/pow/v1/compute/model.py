"""The PoW v1 transformer: Llama-3.1 layout in f16, fed input embeddings, last-position logits.

Layers may be spread over several devices of one GPU group (the activations follow the layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mlnode.pow.v1.compute.params import ModelParams
from mlnode.pow.v1.compute.rope import rope_tables
from mlnode.pow.v1.compute.weights import seeded_weights

LAYER_WEIGHTS = (
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "attention.wo.weight",
    "feed_forward.w1.weight",
    "feed_forward.w2.weight",
    "feed_forward.w3.weight",
    "attention_norm.weight",
    "ffn_norm.weight",
)


@dataclass
class Layer:
    """One transformer block's weights, all on `device`."""

    device: torch.device
    w: dict[str, torch.Tensor]


class PowModel:
    """The seeded model of one block hash, ready to map inputs to last-position logits."""

    def __init__(
        self,
        block_hash: str,
        params: ModelParams,
        devices: Sequence[torch.device],
        cpu_matmul: torch.dtype = torch.float32,
    ) -> None:
        """Derive the weights from the block hash and place the layers over `devices`.

        `cpu_matmul` is the operand type of matrix products on CPU devices: f32 (fast) or f16
        (torch's own f16 GEMM, as the reference runs it on CPU; several times slower).
        """
        self.block_hash = block_hash
        self.cpu_matmul = cpu_matmul
        self.params = params
        self.devices = tuple(devices) or (torch.device("cpu"),)
        self.weights: dict[str, torch.Tensor] = {}
        placement = self._layer_devices()
        for name, values in seeded_weights(block_hash, params):
            device = self._device_of(name, placement)
            dtype = self.matmul_dtype(device) if values.ndim == 2 else torch.float16
            self.weights[name] = torch.from_numpy(values).to(device=device, dtype=dtype)
        self.layers = [
            Layer(dev, {k: self.weights[f"layers.{i}.{k}"] for k in LAYER_WEIGHTS})
            for i, dev in enumerate(placement)
        ]
        cos, sin = rope_tables(params)
        seq = params.seq_len
        mask = torch.full((seq, seq), float("-inf")).triu(1).half()
        self._tables = {
            d: (cos[:seq].to(d), sin[:seq].to(d), mask.to(d))
            for d in set(placement) | {self.devices[-1]}
        }
        self._scale = math.sqrt(params.head_dim)

    def _layer_devices(self) -> list[torch.device]:
        n, k = self.params.n_layers, len(self.devices)
        return [self.devices[min(i * k // n, k - 1)] for i in range(n)]

    def _device_of(self, name: str, placement: list[torch.device]) -> torch.device:
        if name.startswith("layers."):
            return placement[int(name.split(".")[1])]
        return self.devices[0] if name == "tok_embeddings.weight" else self.devices[-1]

    def matmul_dtype(self, device: torch.device) -> torch.dtype:
        """Operand type of matrix products: f16 on GPUs, `cpu_matmul` on CPUs.

        Products of f16 values are exact in f32 and both paths accumulate in f32 before the one
        rounding to f16, so the choice only changes the summation order (SPEC §6, §9).
        """
        return torch.float16 if device.type == "cuda" else self.cpu_matmul

    @property
    def input_device(self) -> torch.device:
        """Where the input embeddings go."""
        return self.layers[0].device if self.layers else self.devices[-1]

    @torch.inference_mode()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """`[B, seq, dim]` f16 embeddings -> `[B, vocab]` f32 logits at the last position."""
        h = inputs
        seq = h.shape[1]
        for layer in self.layers:
            h = h.to(layer.device, non_blocking=True)
            h = self._block(layer, h, seq)
        device = self.devices[-1]
        h = h.to(device, non_blocking=True)
        last = rms_norm(h, self.weights["norm.weight"], self.params.norm_eps)[:, -1, :]
        return linear(last, self.weights["output.weight"]).float()

    def _block(self, layer: Layer, h: torch.Tensor, seq: int) -> torch.Tensor:
        w, p = layer.w, self.params
        a = rms_norm(h, w["attention_norm.weight"], p.norm_eps)
        batch = a.shape[0]
        q = linear(a, w["attention.wq.weight"]).view(batch, seq, p.n_heads, p.head_dim)
        k = linear(a, w["attention.wk.weight"]).view(batch, seq, p.n_kv_heads, p.head_dim)
        v = linear(a, w["attention.wv.weight"]).view(batch, seq, p.n_kv_heads, p.head_dim)
        cos, sin, mask = self._tables[layer.device]
        q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
        if p.n_rep > 1:
            k = k.repeat_interleave(p.n_rep, dim=2)
            v = v.repeat_interleave(p.n_rep, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mm = self.matmul_dtype(layer.device)
        scores = torch.matmul(q.to(mm), k.transpose(2, 3).to(mm)).half() / self._scale
        scores = scores + mask
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        out = torch.matmul(probs.to(mm), v.to(mm)).half()
        h = h + linear(out.transpose(1, 2).reshape(batch, seq, p.dim), w["attention.wo.weight"])
        b = rms_norm(h, w["ffn_norm.weight"], p.norm_eps)
        gated = F.silu(linear(b, w["feed_forward.w1.weight"])) * linear(
            b, w["feed_forward.w3.weight"]
        )
        return h + linear(gated, w["feed_forward.w2.weight"])


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.T` rounded once to f16 (`weight` is stored in the device's matmul type)."""
    return F.linear(x.to(weight.dtype), weight).half()


def rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise in f32, round to f16, then apply the f16 gain."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return normed.type_as(x) * gain


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs `(2m, 2m+1)` of each head by the f16 table, in f32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    a0, a1 = pairs[..., 0], pairs[..., 1]
    c = cos.float()[None, :, None, :]
    s = sin.float()[None, :, None, :]
    rotated = torch.stack((a0 * c - a1 * s, a1 * c + a0 * s), dim=-1)
    return rotated.flatten(-2).type_as(x)
