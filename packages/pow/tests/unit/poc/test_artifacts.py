"""PoC v2 pick order, Haar rotation and fp16 artifacts (SPEC §2.5–2.7) against vectors-A."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
import torch

from mlnode.pow.poc.artifacts import (
    MAX_VECTOR_B64_CHARS,
    artifacts_from_hidden,
    cuda_order_smallest,
    decode_vector,
    encode_vector,
    haar_rotate,
    normalise,
    pick_indices,
)

HIDDEN = 256


def _ids(vectors: dict[str, Any]) -> tuple[str, str]:
    return vectors["params"]["block_hash"], vectors["params"]["public_key"]


def test_cuda_order_is_k_minus_1_smallest_by_index_then_the_kth() -> None:
    scores = torch.tensor([[5, 1, 4, 0, 3, 2], [2, 9, 0, 1, 7, 8]])
    assert cuda_order_smallest(scores, 3).tolist() == [[1, 3, 5], [2, 3, 0]]
    assert cuda_order_smallest(scores, 1).tolist() == [[3], [2]]
    with pytest.raises(ValueError, match="k must be"):
        cuda_order_smallest(scores, 7)


def test_picked_indices_in_cuda_order(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    for it in poc_vectors["intermediates"]:
        idx = pick_indices(bh, pk, it["nonce"], 12, HIDDEN)
        assert idx.dtype == torch.int64
        assert idx.tolist() == it["picked_indices"]
        assert sorted(idx.tolist()) == it["picked_indices_sorted"]


def test_rotation_and_fp16_of_the_pre_rotation_vector(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    for it in poc_vectors["intermediates"]:
        x = torch.tensor([it["pre_rotation"]], dtype=torch.float32)
        y = normalise(haar_rotate(x, bh, pk, [it["nonce"]]))[0]
        want = torch.tensor(it["post_rotation_normalized_f32"])
        torch.testing.assert_close(y, want, rtol=0, atol=1e-6)
        assert y.half().float().tolist() == it["final_f16"]
        assert encode_vector(y) == it["vector_b64"]


def test_artifacts_from_a_hidden_state_with_the_pre_rotation_at_the_picks(
    poc_vectors: dict[str, Any],
) -> None:
    # A hidden state holding the reference's x at its picked indices (zeros elsewhere) gives the
    # reference artifact: the pick, the gather order and the normalisations line up.
    bh, pk = _ids(poc_vectors)
    items = poc_vectors["intermediates"]
    h = torch.zeros(len(items), HIDDEN)
    for row, it in zip(h, items, strict=True):
        row[it["picked_indices"]] = torch.tensor(it["pre_rotation"])
    arts = artifacts_from_hidden(h * 3.0, bh, pk, [it["nonce"] for it in items], 12)
    assert [(a.nonce, a.vector_b64) for a in arts] == [
        (it["nonce"], it["vector_b64"]) for it in items
    ]


def test_nan_nonces_are_dropped() -> None:
    h = torch.randn(3, HIDDEN, dtype=torch.bfloat16)
    h[1, 7] = float("nan")
    arts = artifacts_from_hidden(h, "bh", "pk", [10, 11, 12], 12)
    assert [a.nonce for a in arts] == [10, 12]
    assert all(len(a.vector_b64) == 32 for a in arts)
    assert (
        artifacts_from_hidden(torch.full((2, HIDDEN), float("nan")), "bh", "pk", [1, 2], 12) == []
    )


def test_inf_is_not_tested_but_its_nan_vector_is_dropped() -> None:
    h = torch.randn(2, HIDDEN)
    h[0, :] = float("inf")
    arts = artifacts_from_hidden(h, "bh", "pk", [1, 2], 12)
    assert [a.nonce for a in arts] == [2]


def test_artifact_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="last_hidden"):
        artifacts_from_hidden(torch.zeros(2, HIDDEN), "bh", "pk", [1], 12)
    with pytest.raises(ValueError, match="k_dim"):
        artifacts_from_hidden(torch.zeros(1, 8), "bh", "pk", [1], 12)


def test_encoding_is_little_endian_half_base64() -> None:
    values = torch.tensor([1.0, -2.0, 0.5])
    raw = base64.b64decode(encode_vector(values))
    assert raw == np.array([1.0, -2.0, 0.5], dtype="<f2").tobytes()
    got = decode_vector(encode_vector(values))
    assert got is not None and got.dtype == torch.float32
    assert got.tolist() == [1.0, -2.0, 0.5]


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        "AA==",
        "A",
        "+ijEMVkuVCWBNY23ahYuNJW3f7RXt8Ox\n",
        "A" * (MAX_VECTOR_B64_CHARS + 4),
    ],
)
def test_malformed_vectors_decode_to_none(text: str) -> None:
    assert decode_vector(text) is None


def test_nan_and_wrong_length_vectors_still_decode(poc_vectors: dict[str, Any]) -> None:
    edge = poc_vectors["validation_examples"][3]["received_artifacts"]
    nan = decode_vector(edge[0]["vector_b64"])
    short = decode_vector(edge[1]["vector_b64"])
    assert nan is not None and nan.numel() == 12 and bool(torch.isnan(nan).all())
    assert short is not None and short.numel() == 11
