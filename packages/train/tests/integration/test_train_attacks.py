"""Four real MLNodes train with DiLoCo while a fifth, registered worker attacks them.

The attacker runs in this test process: a real signed gRPC transport with its own key,
registered on every node like any worker, driving `AttackerTrainer`. It claims a round far
ahead and serves its own state there for the whole run, votes for that state's hash, and sends
a different crafted pseudo-gradient each round (scaled, sign-flipped, random, NaN, wrong shape,
an inflated sample count, ALIE, IPM). The same nodes first train a clean run of the same seed,
where the fifth worker is honest. Honest nodes must finish, never take the attacker's state,
agree on one hash each round, and end within 5% of the clean run's eval loss.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mlnode.common.testing import MLNodeProcess, free_port, wait_until
from mlnode.common.transport.auth import decode_public_key, encode_key
from mlnode.common.transport.peers import Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import CLUSTER_NODE_ENV
from mlnode.train.testing.adversary import TAKEOVER_LEAD, Attack, AttackerTrainer
from mlnode.train.trainer import TrainerEnv

HONEST = (1, 2, 3, 4)
ATTACKER = 0  # rank 0: the one every tie of the old rules went to
WORLD = 5
ROUNDS = 8
ATTACKS = [a for a in Attack if a not in (Attack.NONE, Attack.TAKEOVER)]


def name(rank: int) -> str:
    return f"n{rank}"


@pytest.fixture(scope="module")
def network(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[int, MLNodeProcess], GrpcTransport]]:
    """Four honest nodes and the attacker's transport, each knowing every other (any task)."""
    root = tmp_path_factory.mktemp("attack-net")
    nodes = {r: MLNodeProcess(root / name(r), env=CLUSTER_NODE_ENV).start() for r in HONEST}
    settings = TransportSettings(host="127.0.0.1", port=free_port())
    attacker = GrpcTransport(settings, root / "attacker")
    try:
        attacker.start()
        keys = {
            r: httpx.get(f"{n.url}/api/v1/identity").json()["public_key"] for r, n in nodes.items()
        }
        keys[ATTACKER] = encode_key(attacker.identity.public_key)
        addresses = {r: n.grpc_address for r, n in nodes.items()}
        addresses[ATTACKER] = f"127.0.0.1:{attacker.port}"
        for rank, node in nodes.items():
            for other in [o for o in (ATTACKER, *HONEST) if o != rank]:
                body = {"public_key": keys[other], "address": addresses[other]}
                answer = httpx.put(f"{node.url}/api/v1/peers/{name(other)}", json=body)
                assert answer.status_code == 200, answer.text
        for rank in HONEST:
            key = decode_public_key(keys[rank])
            attacker.peers.put(Peer(name(rank), key, addresses[rank]))
        yield nodes, attacker
    finally:
        attacker.stop()
        for node in nodes.values():
            node.kill()


def request(make_request: Callable[..., dict[str, Any]], task: str, rank: int) -> dict[str, Any]:
    body = make_request(
        rank,
        WORLD,
        task_id=task,
        peers=[{"peer_id": name(r), "rank": r} for r in range(WORLD) if r != rank],
        diloco={"inner_steps": 4, "round_timeout_s": 20, "chunk_timeout_s": 10},
        optim={"lr": 3e-3, "total_steps": 4 * ROUNDS, "batch_size": 8, "weight_decay": 0.0},
    )
    body["checkpoint"]["every_outer_steps"] = ROUNDS
    body["checkpoint"]["dir"] = body["checkpoint"]["dir"] + f"-{task}"
    return body


def status(node: MLNodeProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{node.url}/api/v1/train/status", timeout=10).json()
    return body


def run_task(
    network: tuple[dict[int, MLNodeProcess], GrpcTransport],
    make_request: Callable[..., dict[str, Any]],
    tmp_path: Path,
    task: str,
    attacks: list[Attack],
) -> tuple[dict[int, dict[str, Any]], TrainProgress]:
    nodes, transport = network
    for rank, node in nodes.items():
        answer = httpx.post(
            f"{node.url}/api/v1/train/start", json=request(make_request, task, rank), timeout=60
        )
        assert answer.status_code == 200, answer.text
    req = TrainRequest.model_validate(request(make_request, task, ATTACKER))
    progress = TrainProgress(task, ATTACKER, WORLD)
    env = TrainerEnv(transport, torch.device("cpu"), tmp_path / task, 10.0, 20.0)
    attacker = AttackerTrainer.build(req, env, progress, attacks)
    thread = threading.Thread(target=attacker.run, args=(threading.Event(),), daemon=True)
    thread.start()
    finals: dict[int, dict[str, Any]] = {}

    def all_finished() -> bool:
        for rank, node in nodes.items():
            body = status(node)
            assert body["phase"] != "FAILED", body["last_error"]
            if body["phase"] == "FINISHED":
                finals[rank] = body["progress"]
        return len(finals) == len(nodes)

    wait_until(all_finished, timeout_s=300, interval_s=0.5, what="every honest node to finish")
    thread.join(60)
    attacker.unserve()
    return finals, progress


def final_eval(progress: dict[str, Any]) -> float:
    return float(progress["loss_history"][-1]["eval_loss"])


def test_honest_nodes_withstand_an_attacker_that_tries_everything(
    network: tuple[dict[int, MLNodeProcess], GrpcTransport],
    make_request: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    clean, _ = run_task(network, make_request, tmp_path, "clean", [])
    attacked, attacker = run_task(
        network, make_request, tmp_path, "attacked", [Attack.TAKEOVER, *ATTACKS]
    )

    assert len({p["weights_sha256"] for p in clean.values()}) == 1
    attacker_name = name(ATTACKER)
    for progress in attacked.values():
        assert progress["outer_round"] == ROUNDS  # never the attacker's claimed round
        assert progress["pulled_from"] != attacker_name
        assert progress["weights_agree"] is True
        assert progress["robust"]["max_faulty"] == 1
    assert len({p["weights_sha256"] for p in attacked.values()}) == 1
    per_round: dict[int, set[str]] = {}
    for progress in attacked.values():
        for entry in progress["weights_history"]:
            per_round.setdefault(entry["outer_round"], set()).add(entry["sha256"])
    assert all(len(found) == 1 for found in per_round.values()), per_round
    reference = final_eval(clean[HONEST[0]])
    assert abs(final_eval(attacked[HONEST[0]]) - reference) <= 0.05 * reference
    assert attacker.snapshot().outer_round < TAKEOVER_LEAD
