"""Validation excludes the nonces a validator cannot score (SPEC §2.13), on a real engine.

The validator's model is a copy of the tiny Qwen3 whose last MLP has one extra neuron: for chosen
nonces it writes 1e44 (inf in float32) into a residual dimension, so the final RMSNorm gives NaN
and the engine itself finds no artifact for them, a genuine non-finite result of its forward. For
every other nonce the neuron is exactly zero (SiLU of -1000 underflows), and that dimension's
final-norm weight is 0 and never picked, so their artifacts are vectors-A's. The prover's
artifacts are vectors-A's float32 ones; the request goes through the network node's routes of a
real MLNode, with Go-style bodies, and the verdict comes back both by callback and by id.

The same engine mines in the decode scheme with the test codebook: inputs unlike the 64 above fire
the neuron for some nonces at some step, whose trajectory then holds a -1; none may leave the node.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.common.testing.vllm_env import needs_vllm
from mlnode.pow.poc.artifacts import pick_indices
from mlnode.pow.poc.inputs import nonce_inputs
from mlnode.pow.poc.testing import ReferenceForward
from mlnode.pow.testing import block, codebook_sha, down, go_post, poc_node, up_async

DATA = Path(__file__).resolve().parents[1] / "data" / "poc_v2"
VECTORS: dict[str, Any] = json.loads((DATA / "vectors-A.json").read_text())
PARAMS = VECTORS["params"]
#: Nonces the validator's model cannot score: 2 of 0..39 (5%), 8 of 0..63 (12.5%).
UNSCORABLE = (7, 23, 41, 44, 50, 53, 58, 61)
GAIN, PAD = 1000.0, 8
CALLBACK_PATH = "/v2/poc-batches/tiny"
CODEBOOK = DATA / "test-codebook.safetensors"

pytestmark = needs_vllm


def _mlp_inputs(model_dir: Path, nonces: list[int]) -> torch.Tensor:
    """Last position's input to the last decoder layer's MLP `[B, H]` (transformers, float32)."""
    ref = ReferenceForward(model_dir)
    seen: list[torch.Tensor] = []
    hook = ref.layers[-1].mlp.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0][:, -1].clone())
    )
    embeds = nonce_inputs(
        PARAMS["block_hash"], PARAMS["public_key"], nonces, 128, ref.hidden, torch.float32
    )
    ref.last_hidden(PARAMS["block_hash"], embeds)
    hook.remove()
    return torch.cat(seen)


def unscorable_copy(out: Path) -> Path:
    """The tiny Qwen3 with a neuron that overflows on `UNSCORABLE` nonces only (float32)."""
    nonces = list(range(64))
    y = _mlp_inputs(DATA / "model", nonces).double()
    sign = torch.tensor([[1.0 if n in UNSCORABLE else -1.0] for n in nonces], dtype=torch.float64)
    direction = torch.linalg.lstsq(y, sign, driver="gelsd").solution.squeeze(1).float()
    picked = {
        int(i)
        for n in nonces
        for i in pick_indices(PARAMS["block_hash"], PARAMS["public_key"], n, 12, 256)
    }
    dim = min(set(range(256)) - picked)
    shutil.copytree(DATA / "model", out)
    weights = {
        k: t.float() for k, t in load_file(str(DATA / "model" / "model.safetensors")).items()
    }
    for layer in range(3):
        mlp = f"model.layers.{layer}.mlp."
        rows, cols = torch.zeros(PAD, 256), torch.zeros(256, PAD)
        if layer == 2:
            rows[0], cols[dim, 0] = GAIN * direction, 1e38
        for name in ("gate_proj", "up_proj"):
            weights[f"{mlp}{name}.weight"] = torch.cat([weights[f"{mlp}{name}.weight"], rows])
        weights[f"{mlp}down_proj.weight"] = torch.cat([weights[f"{mlp}down_proj.weight"], cols], 1)
    weights["model.norm.weight"][dim] = 0.0
    save_file({k: t.contiguous() for k, t in weights.items()}, str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config["intermediate_size"] += PAD
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str]]:
    tmp = tmp_path_factory.mktemp("exclusion")
    model = str(unscorable_copy(tmp / "model"))
    engine_env = {
        "MLNODE_POC_CODEBOOK_PATH": str(CODEBOOK),
        "MLNODE_POC_CODEBOOK_SHA256": codebook_sha(CODEBOOK),
        "MLNODE_POC_CALLBACK_INTERVAL_S": "0.5",
    }
    node = poc_node(tmp / "node", engine_env)
    try:
        up_async(node, model, "float32")
        node.wait_for_inference()
        yield httpx.Client(base_url=f"{node.url}/api/v1/inference/pow", timeout=300), model
        down(node)
    finally:
        node.terminate()


def _judge(
    validator: tuple[httpx.Client, str], nonces: list[int], receiver: CallbackReceiver
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate vectors-A's honest artifacts of `nonces`: (callback body, stored result)."""
    client, model = validator
    honest = [a for a in VECTORS["artifacts_float32"] if a["nonce"] in nonces]
    honest[0] = {**honest[0], "vector_b64": honest[1]["vector_b64"]}  # one mismatch
    body = block(
        PARAMS,
        12,
        nonces=nonces,
        params={"model": model, "seq_len": 128},
        url=f"{receiver.url}{CALLBACK_PATH}",
        validation={"artifacts": honest},
        stat_test={"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.05},
    )
    queued = go_post(client, "/generate", body)
    assert queued.status_code == 200, queued.text
    request_id = queued.json()["request_id"]
    [callback] = receiver.wait_for(f"{CALLBACK_PATH}/validated", lambda b: len(b) == 1, 240)
    stored = client.get(f"/generate/{request_id}").json()
    assert stored["status"] == "completed", stored
    return callback, stored


def test_five_percent_unscorable_gets_a_verdict_over_the_scored_nonces(
    validator: tuple[httpx.Client, str],
) -> None:
    receiver = CallbackReceiver().start()
    try:
        callback, stored = _judge(validator, list(range(40)), receiver)
    finally:
        receiver.stop()
    for answer in (callback, stored):
        assert (answer["n_excluded"], answer["excluded_nonces"]) == (2, [7, 23])
        assert (answer["n_total"], answer["n_mismatch"], answer["mismatch_nonces"]) == (38, 1, [0])
        assert answer["fraud_detected"] is False and answer["p_value"] > 0.05
        assert answer.get("no_verdict") is None


def test_more_than_ten_percent_unscorable_gets_no_verdict(
    validator: tuple[httpx.Client, str],
) -> None:
    receiver = CallbackReceiver().start()
    try:
        callback, stored = _judge(validator, list(range(64)), receiver)
    finally:
        receiver.stop()
    for answer in (callback, stored):
        assert answer["n_excluded"] == 8 and answer["excluded_nonces"] == list(UNSCORABLE)
        assert answer["n_total"] == 56
        assert answer.get("fraud_detected") is None and answer.get("p_value") is None
        assert "8 of 64" in answer["no_verdict"]
    assert "fraud_detected" in callback and "p_value" in callback  # null, not left out


def test_no_minus_one_leaves_the_node_and_drops_are_counted(
    validator: tuple[httpx.Client, str],
) -> None:
    client, model = validator
    receiver = CallbackReceiver().start()
    try:
        params = {"model": model, "seq_len": 16, "decode": True, "max_tokens": 4}
        init = block(PARAMS, 12, params=params, url=f"{receiver.url}{CALLBACK_PATH}")
        started = go_post(client, "/init/generate", init)
        assert started.status_code == 200, started.text
        deadline = time.monotonic() + 240
        while (dropped := client.get("/status").json()["backends"][0]["non_finite_dropped"]) < 4:
            assert time.monotonic() < deadline, client.get("/status").text
            time.sleep(0.5)
        assert client.post("/stop", content=b"{}").status_code == 200
        time.sleep(1.5)
        bodies = receiver.bodies(f"{CALLBACK_PATH}/generated")
    finally:
        receiver.stop()
    delivered = [a for body in bodies for a in body["artifacts"]]
    assert delivered, "no trajectory was delivered"
    assert all(0 <= k < 16 for a in delivered for k in a["k_points_steps"])
    assert all(len(a["k_points_steps"]) == 5 for a in delivered)
    nonces = {a["nonce"] for a in delivered}
    assert len(nonces) < max(nonces) + 1, "the dropped nonces should be missing"
    assert dropped >= 4
