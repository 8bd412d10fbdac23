"""The test-only transformers reference on the MoE tiny models reproduces their vector files.

Each model routes with its own router (softmax top-k, GLM's grouped routing with a shared expert,
MiniMax's sigmoid with a bias); the files were made the same way on the CPU, so float32 agrees to
fp16 rounding. Eight nonces per model keep this quick; `bench/gpu_torch_checks.py` does all 64.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mlnode.pow.poc.testing import VECTOR_SETS, ReferenceForward, artifact_distances

DATA = Path(__file__).resolve().parents[2] / "data" / "poc_v2"
NONCES = [0, 9, 18, 27, 36, 45, 54, 63]


@pytest.mark.parametrize("name", ["qwen3-moe", "glm4-moe", "minimax-m2"])
def test_float32_reference_reproduces_the_moe_vectors(name: str) -> None:
    model_dir, vector_file = VECTOR_SETS[name]
    vectors: dict[str, Any] = json.loads((DATA / vector_file).read_text())
    params = vectors["params"]
    ref = ReferenceForward(DATA / model_dir, dtype=torch.float32)
    artifacts = ref.artifacts(params["block_hash"], params["public_key"], NONCES, 128, 12)
    wanted = [a for a in vectors["artifacts_float32"] if a["nonce"] in NONCES]
    distances = artifact_distances(artifacts, wanted)
    assert sorted(distances) == NONCES
    assert max(distances.values()) <= 1e-3, distances
