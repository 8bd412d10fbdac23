"""A stop wins: `POST /stop` during a fusion whose peer lists slowly, then a training start.

Before, the fusion's start went on once the slow listing answered and ran beside the training
job. Here a real MLNode races stop and start 20 times against a real peer transport whose `List`
takes 0.5 s, while a watcher reads `/api/v1/state` (every service's status in one snapshot).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mlnode.common.testing import wait_until
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import AttackWatch
from mlnode.common.transport.api import TensorMeta
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport
from mlnode.fuse.testing import random_model, write_checkpoint
from mlnode.train.testing import TINY_LLAMA, write_tiny_corpus

RACES = 20
LIST_DELAY_S = 0.5
SHAPES = {"w": (8, 8)}
LIVEZ_P99_S = 0.25
#: Measured peak of the node while racing (fusion, tiny training): ~0.5 GiB.
NODE_RSS_BOUND = 1 << 30


class SlowLister:
    """A peer's model whose listing takes `LIST_DELAY_S`; each listing sets `listed`."""

    def __init__(self) -> None:
        self.listed = threading.Event()

    def describe(self) -> list[TensorMeta]:
        self.listed.set()
        time.sleep(LIST_DELAY_S)
        return [TensorMeta(n, torch.float32, s) for n, s in SHAPES.items()]

    def get(self, name: str) -> torch.Tensor:
        return torch.zeros(SHAPES[name])


class StateWatch:
    """Reads `/api/v1/state` in a loop; remembers every snapshot with two services running."""

    def __init__(self, url: str) -> None:
        self._url = f"{url}/api/v1/state"
        self.reads = 0
        self.overlaps: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                services = client.get(self._url).json()["services"]
                running = [s["kind"] for s in services if s["running"]]
                self.reads += 1
                if len(running) > 1:
                    self.overlaps.append(running)
                self._stop.wait(0.01)

    def __enter__(self) -> StateWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MLNodeProcess, SlowLister]]:
    root = tmp_path_factory.mktemp("stop-race")
    node = MLNodeProcess(root / "node", {"MLNODE_TRAIN_TORCH_THREADS": "1"}).start()
    key = base64.b64decode(httpx.get(f"{node.url}/api/v1/identity").json()["public_key"])
    peer_id = Identity.generate()
    peers = KnownPeers()
    peers.put(Peer("node", key))
    peer = GrpcTransport(TransportSettings(host="127.0.0.1", port=0), identity=peer_id, peers=peers)
    peer.start()
    lister = SlowLister()
    peer.serve("race", lister)
    body = {
        "public_key": base64.b64encode(peer_id.public_key).decode(),
        "address": f"127.0.0.1:{peer.port}",
        "tasks": ["race"],
    }
    try:
        assert httpx.put(f"{node.url}/api/v1/peers/slow", json=body).status_code == 200
        yield node, lister
    finally:
        peer.stop()
        node.terminate()


def train_body(root: Path, i: int) -> dict[str, Any]:
    return {
        "task_id": f"train-{i}",
        "model": {"config": TINY_LLAMA},
        "dataset": {"path": str(write_tiny_corpus(root / "corpus.txt")), "seq_len": 16},
        "rank": 0,
        "world_size": 1,
        "optim": {"total_steps": 100_000, "batch_size": 4, "micro_batch_size": 4},
        "checkpoint": {"dir": str(root / f"ckpt-{i}"), "every_outer_steps": 1000},
    }


def test_a_stop_during_a_slow_listing_wins_over_the_fusion(
    world: tuple[MLNodeProcess, SlowLister], tmp_path: Path
) -> None:
    node, lister = world
    rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=60)
    local = write_checkpoint(tmp_path / "local", random_model(1, SHAPES))
    fuse = {
        "task_id": "race",
        "method": "linear",
        "sources": [{"peer_id": "slow"}, {"path": str(local)}],
        "output": {"path": str(tmp_path / "out")},
    }
    assert node.proc is not None
    with (
        ThreadPoolExecutor(1) as pool,
        StateWatch(node.url) as state,
        AttackWatch(node.url, [node.proc.pid]) as watch,
    ):
        for i in range(RACES):
            lister.listed.clear()
            fusing = pool.submit(rest.post, "/fuse/start", json=fuse)
            assert lister.listed.wait(30), "the fusion never asked the peer for its listing"
            assert rest.post("/stop").status_code == 200
            assert rest.get("/fuse/status").json()["phase"] == "STOPPED"
            started = rest.post("/train/start", json=train_body(tmp_path, i))
            assert started.status_code < 300, started.text
            answer = fusing.result(timeout=60)
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "stopped_while_starting"
            wait_until(
                lambda: rest.get("/state").json()["state"],
                lambda s: s == "TRAIN",
                timeout_s=10,
                what="training to hold the node",
            )
            assert rest.post("/stop").status_code == 200
    assert not state.overlaps, f"two services running at once: {state.overlaps[:3]}"
    assert state.reads > RACES
    assert not (tmp_path / "out").exists()
    print(
        f"livez p99 {watch.livez_p99_s():.3f} s, node peak rss {watch.peak_rss_bytes() >> 20} MiB"
    )
    assert watch.livez_p99_s() < LIVEZ_P99_S, watch.livez_p99_s()
    assert watch.peak_rss_bytes() < NODE_RSS_BOUND, watch.peak_rss_bytes()
