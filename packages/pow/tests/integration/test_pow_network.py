"""Real MLNode processes and a real callback receiver: generate, validate, forge, outage."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from mlnode.common.testing import MLNodeProcess, wait_until
from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.pow.testing import TINY_V1_PARAMS
from mlnode.pow.v1.compute.engine import DistanceEngine
from mlnode.pow.v1.compute.model import PowModel
from mlnode.pow.v1.compute.params import ModelParams

R_TARGET = 1.41
#: Same code, other batch size and thread count: f32 GEMM may sum in another order (~1e-8).
RECOMPUTE_TOLERANCE = 1e-6
NODE_ENV = {
    "MLNODE_POW_DEVICE": "cpu",
    "MLNODE_POW_CPU_THREADS": "1",
    "MLNODE_POW_CALLBACK_BACKOFF_INITIAL_S": "0.2",
    "MLNODE_POW_CALLBACK_BACKOFF_MAX_S": "1",
}


def init_body(block_hash: str, url: str) -> dict[str, Any]:
    return {
        "block_hash": block_hash,
        "block_height": 7,
        "public_key": "prover-key",
        "batch_size": 16,
        "r_target": R_TARGET,
        "fraud_threshold": 1e-7,
        "params": TINY_V1_PARAMS,
        "node_id": 1,
        "node_count": 3,
        "url": url,
    }


def post_raw(node: MLNodeProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST JSON without a Content-Type header, as the network node's Go client does."""
    return httpx.post(f"{node.url}/api/v1/pow{path}", content=json.dumps(body), timeout=30)


def pow_status(node: MLNodeProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{node.url}/api/v1/pow/status", timeout=10).json()
    return body


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MLNodeProcess, ...]]:
    """A prover and a validator MLNode."""
    base: Path = tmp_path_factory.mktemp("pow-nodes")
    prover = MLNodeProcess(base / "prover", env=NODE_ENV)
    validator = MLNodeProcess(base / "validator", env=NODE_ENV)
    with prover, validator:
        yield prover, validator


def local_distances(block_hash: str, nonces: list[int]) -> np.ndarray:
    model = PowModel(block_hash, ModelParams(**TINY_V1_PARAMS), [torch.device("cpu")])
    return DistanceEngine(model, batch_size=64).distances("prover-key", nonces)


def generate_proofs(node: MLNodeProcess, block_hash: str, url: str, count: int) -> None:
    assert post_raw(node, "/init/generate", init_body(block_hash, url)).status_code == 200
    wait_until(
        lambda: pow_status(node)["proofs_found"] >= count,
        timeout_s=120,
        interval_s=0.1,
        what=f"{count} proofs",
    )
    assert post_raw(node, "/stop", {}).status_code == 200


def test_generated_batches_validate_and_forgeries_are_caught(
    nodes: tuple[MLNodeProcess, ...],
) -> None:
    prover, validator = nodes
    block_hash = "roundtrip-block"
    with CallbackReceiver() as receiver:
        generate_proofs(prover, block_hash, receiver.url, count=40)
        wait_until(
            lambda: pow_status(prover)["batches_pending"] == 0,
            timeout_s=30,
            interval_s=0.1,
            what="delivery",
        )
        batches = receiver.bodies("generated")
        nonces = [n for b in batches for n in b["nonces"]]
        claimed = [d for b in batches for d in b["dist"]]
        assert all(b["block_hash"] == block_hash and b["node_id"] == 1 for b in batches)
        assert all(n % 3 == 1 for n in nonces) and len(set(nonces)) == len(nonces)
        recomputed = local_distances(block_hash, nonces)
        assert np.max(np.abs(recomputed - np.array(claimed))) <= RECOMPUTE_TOLERANCE
        assert all(d < R_TARGET for d in claimed)

        assert post_raw(validator, "/init/validate", init_body(block_hash, receiver.url)).is_success
        honest = {**batches[0], "nonces": nonces, "dist": claimed}
        stale = post_raw(validator, "/validate", {**honest, "block_hash": "other-block"})
        assert stale.status_code == 422 and stale.json()["error"]["param"] == "block_hash"
        twice = {**honest, "nonces": nonces + nonces[:1], "dist": claimed + claimed[:1]}
        assert post_raw(validator, "/validate", twice).status_code == 422
        assert post_raw(validator, "/validate", honest).status_code == 200
        cut = len(nonces) - len(nonces) // 10
        misses = [n for n in range(1, 400, 3) if n not in nonces][: len(nonces) - cut]
        forged = {
            **honest,
            "nonces": nonces[:cut] + misses,
            "dist": claimed[:cut] + [R_TARGET / 2] * len(misses),
        }
        assert post_raw(validator, "/validate", forged).status_code == 200
        verdicts = receiver.wait_for("validated", lambda b: len(b) == 2, timeout_s=120)
    assert verdicts[0]["n_invalid"] == 0 and verdicts[0]["fraud_detected"] is False
    assert verdicts[0]["probability_honest"] == 1.0
    assert verdicts[1]["n_invalid"] == len(misses) and verdicts[1]["fraud_detected"] is True
    assert verdicts[1]["received_dist"] == forged["dist"]
    post_raw(validator, "/stop", {})


def test_every_batch_arrives_after_a_receiver_outage(nodes: tuple[MLNodeProcess, ...]) -> None:
    prover, _ = nodes
    receiver = CallbackReceiver()
    before = pow_status(prover)
    assert post_raw(prover, "/init/generate", init_body("outage-block", receiver.url)).is_success
    time.sleep(10)
    during = pow_status(prover)
    assert during["batches_pending"] > 0 and during["batches_sent"] == before["batches_sent"]
    assert httpx.get(f"{prover.url}/api/v1/state").json()["state"] == "POW"
    metrics = httpx.get(f"{prover.url}/metrics").text
    assert 'mlnode_pow_phase{phase="GENERATING"} 1.0' in metrics
    assert "mlnode_pow_callback_retries_total" in metrics
    with receiver:
        post_raw(prover, "/stop", {})
        wait_until(
            lambda: pow_status(prover)["batches_pending"] == 0,
            timeout_s=60,
            interval_s=0.1,
            what="delivery",
        )
        after = pow_status(prover)
        received = receiver.bodies("generated")
    assert after["batches_dropped"] == before["batches_dropped"]
    assert sum(len(b["nonces"]) for b in received) == after["proofs_found"]
    assert len(received) == after["batches_sent"] - before["batches_sent"]
