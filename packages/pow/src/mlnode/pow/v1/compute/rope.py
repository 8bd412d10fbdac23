"""Rotary position embedding tables (f32 maths, f16 tables), with Llama-3.1 frequency scaling."""

from __future__ import annotations

import math

import numpy as np
import torch

from mlnode.pow.v1.compute.params import ModelParams

SCALE_FACTOR = np.float32(8.0)
LOW_FREQ_FACTOR = np.float32(1.0)
HIGH_FREQ_FACTOR = np.float32(4.0)
OLD_CONTEXT_LEN = np.float32(8192.0)


def base_frequencies(head_dim: int, theta: float) -> np.ndarray:
    """`1 / theta^(2k/hd)` for each rotated pair, each step rounded to f32."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32)[: head_dim // 2] / np.float32(head_dim)
    powers = np.power(np.float64(theta), exponents.astype(np.float64)).astype(np.float32)
    return (np.float32(1.0) / powers).astype(np.float32)


def scale_frequencies(freqs: np.ndarray) -> np.ndarray:
    """Llama-3.1 long-context scaling, op by op in f32 (the reference's own order)."""
    high_wavelen = OLD_CONTEXT_LEN / HIGH_FREQ_FACTOR
    low_wavelen = OLD_CONTEXT_LEN / LOW_FREQ_FACTOR
    out = np.empty_like(freqs)
    for i, freq in enumerate(freqs):
        wavelen = np.float32(np.float32(1.0) / freq) * np.float32(2 * math.pi)
        if wavelen < high_wavelen:
            out[i] = freq
        elif wavelen > low_wavelen:
            out[i] = freq / SCALE_FACTOR
        else:
            smooth = (np.float32(np.float32(1.0) / wavelen) * OLD_CONTEXT_LEN - LOW_FREQ_FACTOR) / (
                HIGH_FREQ_FACTOR - LOW_FREQ_FACTOR
            )
            out[i] = (np.float32(1.0) - smooth) * freq / SCALE_FACTOR + smooth * freq
    return out


def rope_frequencies(params: ModelParams) -> np.ndarray:
    """The f32 frequency of each rotated pair, scaled when `use_scaled_rope`."""
    freqs = base_frequencies(params.head_dim, params.rope_theta)
    return scale_frequencies(freqs) if params.use_scaled_rope else freqs


def rope_tables(params: ModelParams) -> tuple[torch.Tensor, torch.Tensor]:
    """f16 cos and sin tables `[2 * seq_len, head_dim / 2]`."""
    freqs = torch.from_numpy(rope_frequencies(params))
    positions = torch.arange(2 * params.seq_len, dtype=torch.float32)
    angles = torch.outer(positions, freqs)
    return torch.cos(angles).half(), torch.sin(angles).half()
