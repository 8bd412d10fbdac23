"""PoC v2 on CUDA: the k-dim pick order against the CUDA top-k kernel (SPEC §2.6, §6.1), and
artifacts computed on CUDA against the CPU and the reference vectors (§6.2).

No CUDA vLLM runs here, so the artifacts come from the test-only transformers forward
(`mlnode.pow.poc.testing`) with the same maths the engine plugin calls, the MoE models with their
own routing. These tests need only torch and transformers; `bench/gpu_torch_checks.py` prints the
same numbers as a table.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlnode.pow.poc.artifacts import (
    artifacts_from_hidden,
    cuda_order_smallest,
    pick_indices,
    pick_seed_string,
)
from mlnode.pow.poc.inputs import nonce_inputs
from mlnode.pow.poc.rng import murmur3_32, seed_from_string
from mlnode.pow.poc.testing import VECTOR_SETS, ReferenceForward, artifact_distances

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DATA = Path(__file__).resolve().parents[1] / "data" / "poc_v2"
VECTORS: dict[str, Any] = json.loads((DATA / "vectors-A.json").read_text())
PARAMS = VECTORS["params"]
BATCH_SIZES = (1, 64, 256)


def scores_for(nonces: list[int], k_dim: int, hidden: int, device: str) -> torch.Tensor:
    """`[B, H]` pick scores `murmur(d, seed(pick string))` as the reference builds them."""
    keys = torch.arange(hidden, dtype=torch.int64, device=device)
    rows = [
        murmur3_32(
            keys,
            seed_from_string(
                pick_seed_string(PARAMS["block_hash"], PARAMS["public_key"], n, k_dim)
            ),
        )
        for n in nonces
    ]
    return torch.stack(rows).to(torch.int64)


def cuda_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """What the reference calls on the GPU."""
    return torch.topk(-scores, k, dim=-1, largest=True, sorted=False).indices


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_pick_order_of_the_vectors_matches_the_cuda_kernel(batch: int) -> None:
    k, hidden = PARAMS["k_dim"], VECTORS["model"]["hidden_size"]
    nonces = [i % 64 for i in range(batch)]
    got = cuda_topk(scores_for(nonces, k, hidden, "cuda"), k).cpu()
    for row, nonce in zip(got, nonces, strict=True):
        rule = pick_indices(PARAMS["block_hash"], PARAMS["public_key"], nonce, k, hidden)
        assert row.tolist() == rule.tolist(), f"nonce {nonce}, batch {batch}"
    for item in VECTORS["intermediates"]:
        assert got[item["nonce"]].tolist() == item["picked_indices"]


@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize(("hidden", "k"), [(256, 12), (5120, 12), (8192, 256), (2048, 1)])
def test_pick_order_rule_matches_the_kernel_on_model_sizes(batch: int, hidden: int, k: int) -> None:
    scores = scores_for(list(range(batch)), max(k, 2), hidden, "cuda")
    kernel = cuda_topk(scores, k).cpu()
    rule = cuda_order_smallest(scores.cpu(), k)
    mismatched = [i for i in range(batch) if kernel[i].tolist() != rule[i].tolist()]
    assert not mismatched, f"rows {mismatched[:5]} differ (H={hidden}, k={k}, B={batch})"


def _decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f2").astype(np.float32)


def _artifacts(device: str, dtype: torch.dtype) -> dict[int, np.ndarray]:
    ref = ReferenceForward(DATA / "model", dtype=dtype, device=device)
    out: dict[int, np.ndarray] = {}
    for start in range(0, 64, 16):
        chunk = list(range(start, start + 16))
        x = nonce_inputs(
            PARAMS["block_hash"],
            PARAMS["public_key"],
            chunk,
            PARAMS["seq_len"],
            ref.hidden,
            dtype,
            device=device,
        )
        h = ref.last_hidden(PARAMS["block_hash"], x)
        for a in artifacts_from_hidden(
            h, PARAMS["block_hash"], PARAMS["public_key"], chunk, PARAMS["k_dim"]
        ):
            out[a.nonce] = _decode(a.vector_b64)
    return out


def test_float32_artifacts_on_cuda_match_the_cpu_and_the_vectors() -> None:
    cuda, cpu = _artifacts("cuda", torch.float32), _artifacts("cpu", torch.float32)
    reference = {a["nonce"]: _decode(a["vector_b64"]) for a in VECTORS["artifacts_float32"]}
    assert sorted(cuda) == sorted(reference) == sorted(cpu)
    to_cpu = max(float(np.linalg.norm(cuda[n] - cpu[n])) for n in cuda)
    to_ref = max(float(np.linalg.norm(cuda[n] - reference[n])) for n in cuda)
    print(f"float32 CUDA vs CPU max L2 {to_cpu:.3g}, vs vectors {to_ref:.3g}")
    assert to_cpu <= 1e-3 and to_ref <= 1e-3


def test_bfloat16_artifacts_on_cuda_stay_within_the_noise_table() -> None:
    cuda = _artifacts("cuda", torch.bfloat16)
    reference = {a["nonce"]: _decode(a["vector_b64"]) for a in VECTORS["artifacts_float32"]}
    worst = max(float(np.linalg.norm(cuda[n] - reference[n])) for n in reference)
    print(f"bfloat16 CUDA vs float32 vectors max L2 {worst:.3g}")
    assert worst < 0.02


MOE_MODELS = ("qwen3-moe", "glm4-moe", "minimax-m2")
#: The network's lowest distance threshold, and the mismatch share its binomial test allows.
NETWORK_L2, NETWORK_P_MISMATCH = 0.4, 0.1


def _moe_distances(name: str, dtype: torch.dtype) -> tuple[list[float], dict[str, Any]]:
    model_dir, vector_file = VECTOR_SETS[name]
    vectors: dict[str, Any] = json.loads((DATA / vector_file).read_text())
    params = vectors["params"]
    ref = ReferenceForward(DATA / model_dir, dtype=dtype, device="cuda")
    artifacts = ref.artifacts(
        params["block_hash"], params["public_key"], list(range(64)), 128, params["k_dim"]
    )
    return list(artifact_distances(artifacts, vectors["artifacts_float32"]).values()), vectors


@pytest.mark.parametrize("name", MOE_MODELS)
def test_moe_float32_artifacts_on_cuda_match_the_cpu_vectors(name: str) -> None:
    distances, _ = _moe_distances(name, torch.float32)
    print(f"{name} float32 CUDA vs CPU vectors: max L2 {max(distances):.3g}")
    assert max(distances) <= 0.02


@pytest.mark.parametrize("name", MOE_MODELS)
def test_moe_bfloat16_artifacts_on_cuda_stay_within_the_files_noise(name: str) -> None:
    distances, vectors = _moe_distances(name, torch.bfloat16)
    noise = vectors["noise_l2"]["hf_float32 vs hf_bfloat16"]
    over = sum(d > NETWORK_L2 for d in distances)
    print(f"{name} bfloat16 CUDA: max L2 {max(distances):.3g} (CPU bf16: {noise['max']:.3g})")
    assert all(math.isfinite(d) for d in distances), "a nonce got no artifact"
    assert over <= NETWORK_P_MISMATCH * len(distances)
