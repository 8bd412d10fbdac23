"""Causal attention of PoC rows over their own keys and values, outside the engine's paged cache.

vLLM's attention kernels read and write the paged KV cache the scheduler owns; PoC rows have no
blocks there, and borrowing some is what made gonka's artifacts depend on batch position (SPEC
§2.9). Each PoC chunk therefore attends over its own projections here: every nonce is its own
causal sequence, and the decode scheme keeps its keys and values in `PocKVCache`.

Multi-head latent attention (MLA, DeepSeek-V2/V3) goes through the same path in its "prefill"
form: the compressed `kv_c` is expanded per head with the layer's own up-projections into keys
`[k_nope, k_rope]` and values, which is the same softmax attention as the engine's absorbed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class HeadShape:
    """Per-rank head layout of one attention layer."""

    num_heads: int
    num_kv_heads: int
    head_size: int
    head_size_v: int
    scale: float


@dataclass(frozen=True)
class LatentWeights:
    """MLA up-projections as vLLM keeps them: `w_uk_t [N, P, L]` (keys), `w_uv [N, L, V]`."""

    w_uk_t: torch.Tensor
    w_uv: torch.Tensor


@dataclass
class PocKVCache:
    """Keys and values `[B, kv_heads, T, d]` of every layer, appended step by step (decode)."""

    keys: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def extend(
        self, layer: str, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys and values of `layer`; the whole history comes back."""
        if layer in self.keys:
            key = torch.cat([self.keys[layer], key], dim=2)
            value = torch.cat([self.values[layer], value], dim=2)
        self.keys[layer] = key
        self.values[layer] = value
        return key, value


def causal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    batch: int,
    shape: HeadShape,
    layer: str = "",
    cache: PocKVCache | None = None,
) -> torch.Tensor:
    """Attention of `batch` independent sequences laid out row-major in `[B*S, heads*d]` tensors.

    Without a cache the S rows of a nonce attend causally to each other; with one, they attend to
    everything cached for that nonce before them too (one row per nonce per decode step). Returns
    `[B*S, heads*d_v]` in the query's dtype.
    """
    rows = query.shape[0]
    if rows % batch:
        raise ValueError(f"{rows} rows do not split into {batch} sequences")
    seq = rows // batch
    q = query.reshape(batch, seq, shape.num_heads, shape.head_size).transpose(1, 2)
    k = key.reshape(batch, seq, shape.num_kv_heads, shape.head_size).transpose(1, 2)
    v = value.reshape(batch, seq, shape.num_kv_heads, shape.head_size_v).transpose(1, 2)
    past = 0
    if cache is not None:
        past = cache.keys[layer].shape[2] if layer in cache.keys else 0
        k, v = cache.extend(layer, k, v)
    mask = None
    if past and seq > 1:
        mask = torch.ones(seq, past + seq, dtype=torch.bool, device=q.device).tril(past)
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        is_causal=past == 0 and seq > 1,
        scale=shape.scale,
        enable_gqa=shape.num_kv_heads != shape.num_heads,
    )
    return out.transpose(1, 2).reshape(rows, shape.num_heads * shape.head_size_v)


def latent_attention(
    query: torch.Tensor,
    kv_c: torch.Tensor,
    k_pe: torch.Tensor,
    weights: LatentWeights,
    *,
    batch: int,
    shape: HeadShape,
    layer: str = "",
    cache: PocKVCache | None = None,
) -> torch.Tensor:
    """MLA of `batch` sequences: `query [T, N, P+R]`, `kv_c [T, L]`, `k_pe [T, 1, R]` → `[T, N*V]`.

    Keys are `[kv_c·W_UK, k_pe]` per head (one rotary part for all heads), values `kv_c·W_UV`.
    """
    rows, heads = query.shape[0], shape.num_heads
    k_nope = torch.einsum("tl,npl->tnp", kv_c, weights.w_uk_t.to(kv_c.dtype))
    value = torch.einsum("tl,nlv->tnv", kv_c, weights.w_uv.to(kv_c.dtype))
    rope = k_pe.reshape(rows, 1, -1).expand(rows, heads, k_pe.shape[-1])
    key = torch.cat([k_nope, rope.to(k_nope.dtype)], dim=-1)
    return causal_attention(
        query.reshape(rows, heads * shape.head_size),
        key.reshape(rows, heads * shape.head_size),
        value.reshape(rows, heads * shape.head_size_v),
        batch=batch,
        shape=shape,
        layer=layer,
        cache=cache,
    )
