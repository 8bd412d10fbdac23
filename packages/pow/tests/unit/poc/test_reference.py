"""End to end: the maths of mlnode.pow.poc around transformers' Qwen3 reproduce vectors-A.

The forward is the TEST-ONLY reference of `mlnode.pow.poc.testing` (HF model code, forward hooks),
so these tests prove the seeds, reflections, read-out, pick, rotation and decode loop without vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mlnode.pow.poc.artifacts import decode_vector
from mlnode.pow.poc.decode import Codebook
from mlnode.pow.poc.testing import ReferenceForward
from mlnode.pow.poc.validation import StatTest, validate_trajectories, validate_vectors

TEST_CODEBOOK_SHA256 = "840ab5bdafdd257964843975c7e901761b143b93ac6b8d86d99345113f157c6b"
#: Issue 12's acceptance bound for a float32 forward.
FP32_L2 = 1e-3
#: The plugin's default dist_threshold: a bf16 prover must pass a float32 validator's check.
BF16_L2 = 0.02


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(poc_model_dir: Path) -> ReferenceForward:
    return ReferenceForward(poc_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def codebook(poc_codebook_path: Path) -> Codebook:
    return Codebook.load(poc_codebook_path, TEST_CODEBOOK_SHA256)


def _ids(vectors: dict[str, Any]) -> tuple[str, str]:
    return vectors["params"]["block_hash"], vectors["params"]["public_key"]


def _l2(a: str, b: str) -> float:
    va, vb = decode_vector(a), decode_vector(b)
    assert va is not None and vb is not None
    return float(torch.linalg.vector_norm(va - vb))


@pytest.mark.parametrize("chunk", range(4))
def test_float32_artifacts(
    reference: ReferenceForward, poc_vectors: dict[str, Any], chunk: int
) -> None:
    bh, pk = _ids(poc_vectors)
    nonces = list(range(16 * chunk, 16 * chunk + 16))
    arts = reference.artifacts(bh, pk, nonces, 128, 12, batch_size=16)
    want = {a["nonce"]: a["vector_b64"] for a in poc_vectors["artifacts_float32"]}
    assert [a.nonce for a in arts] == nonces
    distances = {a.nonce: _l2(a.vector_b64, want[a.nonce]) for a in arts}
    assert max(distances.values()) <= FP32_L2, distances


def test_float32_artifacts_do_not_depend_on_the_batch(
    reference: ReferenceForward, poc_vectors: dict[str, Any]
) -> None:
    bh, pk = _ids(poc_vectors)
    alone = reference.artifacts(bh, pk, [1], 128, 12)
    mixed = reference.artifacts(bh, pk, [7, 1, 3], 128, 12)
    assert _l2(alone[0].vector_b64, mixed[1].vector_b64) <= FP32_L2


def test_bfloat16_forward_passes_a_float32_validator(
    poc_model_dir: Path, poc_vectors: dict[str, Any]
) -> None:
    bh, pk = _ids(poc_vectors)
    bf16 = ReferenceForward(poc_model_dir, dtype=torch.bfloat16)
    nonces = list(range(16))
    arts = bf16.artifacts(bh, pk, nonces, 128, 12)
    computed = {a["nonce"]: a["vector_b64"] for a in poc_vectors["artifacts_float32"]}
    received = {a.nonce: a.vector_b64 for a in arts}
    out = validate_vectors(computed, received, 12, StatTest(dist_threshold=BF16_L2), nonces)
    assert (out.n_mismatch, out.fraud_detected) == (0, False)


@pytest.mark.parametrize("chunk", range(4))
def test_decode_trajectories(
    reference: ReferenceForward, codebook: Codebook, poc_vectors: dict[str, Any], chunk: int
) -> None:
    bh, pk = _ids(poc_vectors)
    spec = poc_vectors["decode"]
    nonces = spec["nonces"][4 * chunk : 4 * chunk + 4]
    k, scores = reference.decode(bh, pk, nonces, spec["seq_len"], spec["max_tokens"], codebook)
    assert k.shape == (4, spec["max_tokens"] + 1)
    assert scores.shape == (4, spec["max_tokens"] + 1, 16)
    for row, n in zip(k.tolist(), nonces, strict=True):
        assert row == spec["k_points_steps_float32"][str(n)], n


def test_teacher_forced_validation_of_decode(
    reference: ReferenceForward, codebook: Codebook, poc_vectors: dict[str, Any]
) -> None:
    bh, pk = _ids(poc_vectors)
    spec = poc_vectors["decode"]
    nonces = [0, 1]
    honest = [spec["k_points_steps_float32"][str(n)] for n in nonces]
    forged = [list(honest[0]), list(honest[1])]
    forged[1][5] = (forged[1][5] + 8) % 16
    steps = spec["max_tokens"]
    stat = StatTest(dist_threshold=0.025)
    for claimed, want_mismatch in ((honest, []), (forged, [1])):
        k, scores = reference.decode(bh, pk, nonces, spec["seq_len"], steps, codebook, claimed)
        own = dict(zip(nonces, scores, strict=True))
        out = validate_trajectories(
            own, dict(zip(nonces, claimed, strict=True)), stat, nonces, steps
        )
        assert out.mismatch_nonces == want_mismatch
