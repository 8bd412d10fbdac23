"""Three real MLNode processes train one tiny causal LM with DiLoCo over the signed transport.

The pseudo-gradients travel as sparseloco (top-k, 2-bit values, error feedback kept in the
checkpoints), the leanest encoding, so resume and rejoin are checked with its state too.

One test walks the whole story so the processes start once: the loss falls and the weights are
identical on every node after every outer step; stop then start resumes from the checkpoint;
one node is killed mid-round and the other two go on; the restarted node rejoins from its
checkpoint plus the current weights pulled from a peer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlnode.common.testing import MLNodeProcess, WaitTimeout, wait_until
from mlnode.train.testing import CLUSTER_NODE_ENV

TASK = "task-int"
NODES = 3
TOTAL_ROUNDS = 60


def node_id(rank: int) -> str:
    return f"n{rank}"


def register(nodes: dict[int, MLNodeProcess], rank: int, others: list[int]) -> None:
    """Tell node `rank` the keys and transport addresses of `others` (as a network node would)."""
    for other in others:
        key = httpx.get(f"{nodes[other].url}/api/v1/identity").json()["public_key"]
        body = {"public_key": key, "address": nodes[other].grpc_address, "tasks": [TASK]}
        response = httpx.put(f"{nodes[rank].url}/api/v1/peers/{node_id(other)}", json=body)
        assert response.status_code == 200, response.text


def status(node: MLNodeProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{node.url}/api/v1/train/status", timeout=10).json()
    return body


def wait_for(
    check: Callable[[], bool], what: str, nodes: dict[int, MLNodeProcess], timeout: float = 180
) -> None:
    try:
        wait_until(check, timeout_s=timeout, interval_s=0.2, what=what)
    except WaitTimeout as exc:
        logs = "\n".join(f"--- {r}\n{n.log()[-3000:]}" for r, n in nodes.items())
        raise AssertionError(f"{exc}\n{logs}") from None


def train_logs(nodes: dict[int, MLNodeProcess]) -> str:
    """The trainers' warnings of every node (who was left out, who pulled from whom), without
    the repeats about a node that is down."""
    lines = {
        r: [x for x in n.log().splitlines() if "mlnode.train" in x and "Unreachable" not in x]
        for r, n in nodes.items()
    }
    return "\n".join(f"--- n{r}\n" + "\n".join(found[-40:]) for r, found in lines.items())


def hashes(body: dict[str, Any]) -> dict[int, str]:
    return {h["outer_round"]: h["sha256"] for h in body["progress"]["weights_history"]}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[int, MLNodeProcess]]:
    nodes = {
        r: MLNodeProcess(tmp_path / node_id(r), env=CLUSTER_NODE_ENV).start() for r in range(NODES)
    }
    try:
        for rank in nodes:
            register(nodes, rank, [o for o in nodes if o != rank])
        yield nodes
    finally:
        for node in nodes.values():
            node.kill()


def start_body(
    make_request: Callable[..., dict[str, Any]], tmp_path: Path, rank: int
) -> dict[str, Any]:
    return make_request(
        rank,
        NODES,
        task_id=TASK,
        peers=[{"peer_id": node_id(r), "rank": r} for r in range(NODES) if r != rank],
        diloco={
            "inner_steps": 4,
            "round_timeout_s": 20,
            "chunk_timeout_s": 10,
            "compression": "sparseloco",
        },
        optim={"lr": 3e-3, "total_steps": 4 * TOTAL_ROUNDS, "batch_size": 8, "weight_decay": 0.0},
        checkpoint={"dir": str(tmp_path / f"ckpt-{rank}"), "every_outer_steps": 1},
    )


def test_three_nodes_train_survive_a_kill_and_resume(
    cluster: dict[int, MLNodeProcess], make_request: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    nodes = cluster
    seen: dict[int, dict[int, str]] = {r: {} for r in range(NODES)}

    def start(rank: int) -> None:
        body = start_body(make_request, tmp_path, rank)
        response = httpx.post(f"{nodes[rank].url}/api/v1/train/start", json=body, timeout=60)
        assert response.status_code == 200, response.text

    def rounds(rank: int) -> int:
        body = status(nodes[rank])
        assert body["phase"] != "FAILED", body["last_error"]
        seen[rank].update(hashes(body))
        return int((body["progress"] or {}).get("outer_round", 0))

    # 1. Train a few rounds; the weights match after every outer step and the loss falls.
    for rank in range(NODES):
        start(rank)
    wait_for(lambda: all(rounds(r) >= 3 for r in range(NODES)), "3 rounds", nodes)
    for rank in range(NODES):
        assert httpx.post(f"{nodes[rank].url}/api/v1/train/stop", timeout=60).status_code == 200
        rounds(rank)
    history = status(nodes[0])["progress"]["loss_history"]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]
    assert_identical(seen, nodes)

    # 2. Stop then start resumes from the checkpoint.
    checkpoints = [status(nodes[r])["progress"]["outer_round"] for r in range(NODES)]
    for rank in range(NODES):
        start(rank)
    wait_for(
        lambda: all(status(nodes[r])["progress"]["resumed_from"] for r in range(NODES)),
        "resume",
        nodes,
    )
    for rank in range(NODES):
        assert status(nodes[rank])["progress"]["resumed_from"] == checkpoints[rank]

    # 3. Kill node 2 mid-round; nodes 0 and 1 finish the next rounds without it.
    wait_for(lambda: rounds(2) >= max(checkpoints) + 2, "rounds after resume", nodes)
    nodes[2].kill()
    killed_at = max(rounds(0), rounds(1))
    wait_for(lambda: min(rounds(0), rounds(1)) >= killed_at + 3, "survivor rounds", nodes)
    wait_for(
        lambda: (
            status(nodes[0])["progress"]["peers_alive"] == ["n1"]
            and "n2" in status(nodes[0])["progress"]["round_failures"]
        ),
        "a round of n0 with n1 and without n2",
        nodes,
        timeout=60,
    )

    # 4. Restart node 2: it rejoins from its checkpoint and the weights pulled from a peer.
    nodes[2] = MLNodeProcess(tmp_path / node_id(2), env=CLUSTER_NODE_ENV).start()
    register(nodes, 0, [2])
    register(nodes, 1, [2])
    register(nodes, 2, [0, 1])
    start(2)
    wait_for(lambda: status(nodes[2])["progress"]["pulled_from"] is not None, "rejoin", nodes)
    rejoined = status(nodes[2])["progress"]
    assert rejoined["resumed_from"] is not None
    assert rejoined["pulled_from"] in {"n0", "n1"}
    wait_for(
        lambda: all(status(nodes[r])["phase"] == "FINISHED" for r in range(NODES)),
        "the end of training",
        nodes,
    )
    for rank in range(NODES):
        assert rounds(rank) == TOTAL_ROUNDS
    assert_identical(seen, nodes)
    finals = {status(nodes[r])["progress"]["weights_sha256"] for r in range(NODES)}
    assert finals == {seen[0][TOTAL_ROUNDS]}
    final = status(nodes[0])["progress"]["loss_history"]
    assert final[-1]["eval_loss"] < history[0]["eval_loss"] - 0.5


def assert_identical(seen: dict[int, dict[int, str]], nodes: dict[int, MLNodeProcess]) -> None:
    """Every outer round that two nodes both recorded has one weight hash."""
    rounds = set().union(*seen.values())
    assert rounds
    for outer_round in sorted(rounds):
        values = {r: seen[r][outer_round][:12] for r in seen if outer_round in seen[r]}
        assert len(set(values.values())) == 1, f"round {outer_round}: {values}\n{train_logs(nodes)}"
