"""PoC v2 input embeddings and layer reflections (SPEC §2.3–2.4) against vectors-A."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mlnode.pow.poc.inputs import (
    layer_reflection_vectors,
    nonce_inputs,
    pseudo_input_ids,
    reflect,
)
from mlnode.pow.poc.rng import batched_stronger_normal, murmur3_32, normal, seed_from_string

SEQ_LEN, HIDDEN = 128, 256


def _ids(vectors: dict[str, Any]) -> tuple[str, str]:
    return vectors["params"]["block_hash"], vectors["params"]["public_key"]


def test_embeddings_first_values_fp32(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    items = poc_vectors["intermediates"]
    x = nonce_inputs(bh, pk, [it["nonce"] for it in items], SEQ_LEN, HIDDEN, torch.float32)
    assert x.shape == (len(items), SEQ_LEN, HIDDEN) and x.dtype == torch.float32
    # Box-Muller's log/cos come from the CPU's vector libm (SLEEF): AVX-512 and AVX2 builds
    # differ by one float32 ulp on a few values, so allow two ulps and no more.
    ulps = 2 * 2.0**-23
    for row, it in zip(x, items, strict=True):
        assert row[0, :8].tolist() == pytest.approx(it["input_embeds_first8_f32"], abs=0, rel=ulps)
        assert row[1, :4].tolist() == pytest.approx(
            it["input_embeds_row1_first4_f32"], abs=0, rel=ulps
        )


def test_embeddings_first_values_bf16(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    for it in poc_vectors["intermediates"]:
        x = nonce_inputs(bh, pk, [it["nonce"]], SEQ_LEN, HIDDEN, torch.bfloat16)
        assert x.dtype == torch.bfloat16
        assert x[0, 0, :8].float().tolist() == it["input_embeds_first8_bf16"]


def test_embeddings_are_the_row_major_stream(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    x = nonce_inputs(bh, pk, [5], 4, 6, torch.float32)
    stream = normal(seed_from_string(f"{bh}_{pk}_nonce5"), 24)
    assert torch.equal(x[0].reshape(-1), stream)


def test_a_nonce_gets_the_same_inputs_in_any_batch(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    batch = nonce_inputs(bh, pk, [3, 9, 1], 16, HIDDEN, torch.float32)
    assert torch.equal(batch[2], nonce_inputs(bh, pk, [1], 16, HIDDEN, torch.float32)[0])


def test_stronger_rng_uses_the_segmented_stream(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    x = nonce_inputs(bh, pk, [0, 1], 8, HIDDEN, torch.bfloat16, stronger_rng=True)
    want = batched_stronger_normal(
        [f"{bh}_{pk}_nonce0", f"{bh}_{pk}_nonce1"], 8 * HIDDEN, dtype=torch.bfloat16
    )
    assert torch.equal(x.reshape(2, -1), want)
    assert not torch.equal(x, nonce_inputs(bh, pk, [0, 1], 8, HIDDEN, torch.bfloat16))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        nonce_inputs("b", "p", [0], 0, HIDDEN, torch.float32)


def test_layer_reflection_vectors(poc_vectors: dict[str, Any]) -> None:
    bh, _ = _ids(poc_vectors)
    v = layer_reflection_vectors(bh, 3, HIDDEN)
    assert v.shape == (3, HIDDEN) and v.dtype == torch.float32
    want = torch.tensor(poc_vectors["layer_householder_first4"])
    torch.testing.assert_close(v[:, :4], want, rtol=0, atol=1e-7)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-6)


def test_reflect_is_an_involution_that_flips_v() -> None:
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(64, generator=gen)
    v = v / v.norm()
    x = torch.randn(3, 5, 64, generator=gen)
    y = reflect(x, v)
    torch.testing.assert_close(reflect(y, v), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=0)
    torch.testing.assert_close(reflect(v.expand(2, 64), v), -v.expand(2, 64), rtol=0, atol=1e-6)


def test_reflect_stays_in_the_activation_dtype() -> None:
    v = torch.ones(8) / 8**0.5
    x = torch.arange(16, dtype=torch.bfloat16).view(2, 8)
    y = reflect(x, v)
    assert y.dtype == torch.bfloat16
    vb = v.to(torch.bfloat16)
    assert torch.equal(y, x - 2 * (x * vb).sum(-1, keepdim=True) * vb)


def test_pseudo_input_ids_for_deepseek_v4() -> None:
    ids = pseudo_input_ids("bh", "pk", [4, 5], 6, 1000)
    assert ids.shape == (2, 6)
    seed = seed_from_string("bh_pk_nonce5_input_ids")
    assert ids[1].tolist() == (murmur3_32(torch.arange(6), seed) % 1000).tolist()
    assert int(ids.max()) < 1000
