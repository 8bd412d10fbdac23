"""Chunk-local causal attention against a plain per-sequence softmax, prefill and decode."""

import math

import torch

from mlnode.pow.engine.attention import (
    HeadShape,
    LatentWeights,
    PocKVCache,
    causal_attention,
    latent_attention,
)

SHAPE = HeadShape(num_heads=4, num_kv_heads=2, head_size=8, head_size_v=8, scale=0.3)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int) -> torch.Tensor:
    """Row by row: each row attends to itself and the rows before it in its own sequence."""
    seq = q.shape[0] // batch
    h, d, group = SHAPE.num_heads, SHAPE.head_size, SHAPE.num_heads // SHAPE.num_kv_heads
    out = torch.zeros(q.shape[0], h * d, dtype=torch.float64)
    for b in range(batch):
        for t in range(seq):
            row = b * seq + t
            for head in range(h):
                kv = head // group
                qv = q[row, head * d : (head + 1) * d].double()
                keys = k[b * seq : row + 1, kv * d : (kv + 1) * d].double()
                vals = v[b * seq : row + 1, kv * d : (kv + 1) * d].double()
                w = torch.softmax(keys @ qv * SHAPE.scale, dim=0)
                out[row, head * d : (head + 1) * d] = w @ vals
    return out


def projections(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, SHAPE.num_heads * SHAPE.head_size, generator=g)
    k = torch.randn(rows, SHAPE.num_kv_heads * SHAPE.head_size, generator=g)
    v = torch.randn(rows, SHAPE.num_kv_heads * SHAPE.head_size_v, generator=g)
    return q, k, v


def test_every_nonce_is_its_own_causal_sequence() -> None:
    q, k, v = projections(3 * 5, seed=1)
    out = causal_attention(q, k, v, batch=3, shape=SHAPE)
    assert torch.allclose(out.double(), reference(q, k, v, batch=3), atol=1e-5)


def test_decode_steps_over_the_cache_equal_one_long_prefill() -> None:
    batch, prefill, steps = 2, 4, 3
    total = prefill + steps
    q, k, v = projections(batch * total, seed=2)
    full = causal_attention(q, k, v, batch=batch, shape=SHAPE).view(batch, total, -1)

    def rows(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return x.view(batch, total, -1)[:, lo:hi].reshape(batch * (hi - lo), -1)

    cache = PocKVCache()
    first = causal_attention(
        rows(q, 0, prefill),
        rows(k, 0, prefill),
        rows(v, 0, prefill),
        batch=batch,
        shape=SHAPE,
        layer="l0",
        cache=cache,
    )
    assert torch.allclose(first.view(batch, prefill, -1), full[:, :prefill], atol=1e-6)
    for t in range(prefill, total):
        step = causal_attention(
            rows(q, t, t + 1),
            rows(k, t, t + 1),
            rows(v, t, t + 1),
            batch=batch,
            shape=SHAPE,
            layer="l0",
            cache=cache,
        )
        assert torch.allclose(step, full[:, t], atol=1e-6)
    assert cache.keys["l0"].shape == (batch, SHAPE.num_kv_heads, total, SHAPE.head_size)


def test_a_single_row_attends_to_itself_only() -> None:
    q, k, v = projections(2, seed=3)
    out = causal_attention(q, k, v, batch=2, shape=SHAPE)
    group = SHAPE.num_heads // SHAPE.num_kv_heads
    expected = v.view(2, SHAPE.num_kv_heads, SHAPE.head_size).repeat_interleave(group, dim=1)
    assert torch.allclose(out, expected.reshape(2, -1), atol=1e-6)
    assert not math.isnan(float(out.sum()))


def test_latent_attention_equals_deepseeks_absorbed_form() -> None:
    """MLA expanded per head (as here) against DeepSeek-V3's `absorb` form on the latent cache."""
    heads, nope, rope, rank, dv, batch, seq = 3, 8, 4, 16, 6, 2, 5
    shape = HeadShape(heads, heads, nope + rope, dv, scale=0.35)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(batch * seq, heads, nope + rope, generator=g)
    kv_c = torch.randn(batch * seq, rank, generator=g)
    k_pe = torch.randn(batch * seq, 1, rope, generator=g)
    w_uk_t = torch.randn(heads, nope, rank, generator=g)
    w_uv = torch.randn(heads, rank, dv, generator=g)
    out = latent_attention(q, kv_c, k_pe, LatentWeights(w_uk_t, w_uv), batch=batch, shape=shape)

    # DeepSeek-V3 inference/model.py, attn_impl "absorb": q_nope is taken into the latent space.
    q_latent = torch.einsum("tnp,npl->tnl", q[..., :nope].double(), w_uk_t.double())
    expected = torch.zeros(batch * seq, heads, dv, dtype=torch.float64)
    for b in range(batch):
        for t in range(seq):
            row, past = b * seq + t, slice(b * seq, b * seq + t + 1)
            scores = torch.einsum("nl,sl->ns", q_latent[row], kv_c[past].double())
            scores += torch.einsum("nr,sr->ns", q[row, :, nope:].double(), k_pe[past, 0].double())
            weights = torch.softmax(scores * shape.scale, dim=-1)
            latent = weights @ kv_c[past].double()
            expected[row] = torch.einsum("nl,nlv->nv", latent, w_uv.double())
    assert torch.allclose(out.double(), expected.reshape(batch * seq, heads * dv), atol=1e-4)
