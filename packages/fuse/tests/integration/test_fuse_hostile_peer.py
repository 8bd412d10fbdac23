"""A real MLNode fuses from a peer that lies: about sizes, or by dripping its data.

The lying peer is a real transport in this process, registered with the fusing node like any
peer. A tensor announced small but sent large is refused at its header (before any memory is
allocated), a fetch that never completes fails at its deadline, `/fuse/stop` returns only once
the worker stopped pulling, and honest fusions keep working afterwards.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mlnode.common.testing import wait_until
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.transport.api import TensorMeta
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport
from mlnode.fuse.testing import random_model, write_checkpoint

SHAPES = {"w": (64, 64), "b": (64,)}
#: With 100 bytes/s as the slowest accepted rate, a fetch of `b` (256 bytes) gets 3 + 2.6 s and
#: one of `w` (16 KiB) 3 + 164 s: longer than stop waits for a worker (30 s).
SMALL = {"b": (64,)}
BIG = {"w": (64, 64)}
MIB = 1 << 20
#: How much the fusing node's peak memory may grow while the liar offers 1 GiB.
PEAK_BOUND = 256 * MIB


class LyingProvider:
    """Lists the model's true shapes; serves `w` 1 GiB large, or only after `release`."""

    def __init__(self, drip: bool, shapes: Mapping[str, tuple[int, ...]] = SHAPES) -> None:
        self.drip = drip
        self.shapes = shapes
        self.release = threading.Event()
        self.calls: list[float] = []

    def describe(self) -> list[TensorMeta]:
        return [TensorMeta(n, torch.float32, s) for n, s in self.shapes.items()]

    def get(self, name: str) -> torch.Tensor:
        self.calls.append(time.monotonic())
        if self.drip:
            self.release.wait(300)
            return torch.zeros(self.shapes[name])
        if name == "w":  # untouched pages: sending them costs the liar no memory
            return torch.empty(1 << 28, dtype=torch.float32)
        return torch.zeros(SHAPES[name])


def vm(node: MLNodeProcess, field: str) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def api(node: MLNodeProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{node.url}/api/v1{path}", timeout=60, **kwargs)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MLNodeProcess, GrpcTransport, dict[str, LyingProvider]]]:
    root = tmp_path_factory.mktemp("hostile-fuse")
    env = {"MLNODE_FUSE_PEER_TIMEOUT_S": "3", "MLNODE_FUSE_PEER_MIN_BYTES_PER_S": "100"}
    fuser = MLNodeProcess(root / "fuser", env).start()
    fuser_key = base64.b64decode(api(fuser, "GET", "/identity").json()["public_key"])
    liar_id = Identity.generate()
    peers = KnownPeers()
    peers.put(Peer("fuser", fuser_key))
    liar = GrpcTransport(TransportSettings(host="127.0.0.1", port=0), identity=liar_id, peers=peers)
    liar.start()
    providers = {
        "lie": LyingProvider(drip=False),
        "drip": LyingProvider(drip=True, shapes=SMALL),
        "drip-long": LyingProvider(drip=True, shapes=BIG),
    }
    for task, provider in providers.items():
        liar.serve(task, provider)
    body = {
        "public_key": base64.b64encode(liar_id.public_key).decode(),
        "address": f"127.0.0.1:{liar.port}",
        "tasks": list(providers),
    }
    assert api(fuser, "PUT", "/peers/liar", json=body).status_code == 200
    try:
        yield fuser, liar, providers
    finally:
        for provider in providers.values():
            provider.release.set()
        liar.stop()
        fuser.kill()


def start(fuser: MLNodeProcess, task: str, sources: list[dict[str, Any]], out: Path) -> None:
    body = {"task_id": task, "method": "linear", "sources": sources, "output": {"path": str(out)}}
    response = api(fuser, "POST", "/fuse/start", json=body)
    assert response.status_code == 202, response.text


def wait_ended(fuser: MLNodeProcess, timeout_s: float = 60) -> dict[str, Any]:
    status: dict[str, Any] = wait_until(
        lambda: api(fuser, "GET", "/fuse/status").json(),
        lambda s: s["phase"] not in ("STARTING", "RUNNING", "STOPPING"),
        timeout_s=timeout_s,
        interval_s=0.1,
        what="the fusion to end",
    )
    return status


def honest_fusion_works(fuser: MLNodeProcess, tmp_path: Path, name: str) -> None:
    a = write_checkpoint(tmp_path / f"{name}-a", random_model(1, SHAPES))
    b = write_checkpoint(tmp_path / f"{name}-b", random_model(2, SHAPES))
    start(fuser, "local", [{"path": str(a)}, {"path": str(b)}], tmp_path / f"{name}-out")
    assert wait_ended(fuser)["phase"] == "FINISHED"


def test_a_tensor_larger_than_listed_is_refused_at_its_header(world, tmp_path: Path) -> None:
    fuser, _, providers = world
    local = write_checkpoint(tmp_path / "local", random_model(1, SHAPES))
    peak = vm(fuser, "VmHWM")
    start(fuser, "lie", [{"peer_id": "liar"}, {"path": str(local)}], tmp_path / "out")
    status = wait_ended(fuser)
    assert status["phase"] == "FAILED" and "listed" in status["error"], status
    assert providers["lie"].calls  # the liar was asked, and answered with its big header
    assert vm(fuser, "VmHWM") - peak < PEAK_BOUND
    assert not (tmp_path / "out").exists()
    honest_fusion_works(fuser, tmp_path, "after-lie")


def test_a_dripping_peer_fails_the_fusion_at_its_deadline(world, tmp_path: Path) -> None:
    fuser, _, _ = world
    local = write_checkpoint(tmp_path / "local", random_model(1, SMALL))
    start(fuser, "drip", [{"peer_id": "liar"}, {"path": str(local)}], tmp_path / "out")
    status = wait_ended(fuser)  # MLNODE_FUSE_PEER_TIMEOUT_S=3
    assert status["phase"] == "FAILED" and "DEADLINE_EXCEEDED" in status["error"], status
    honest_fusion_works(fuser, tmp_path, "after-drip")


def test_stop_returns_once_the_worker_no_longer_pulls(world, tmp_path: Path) -> None:
    fuser, _, providers = world
    drip = providers["drip-long"]  # its fetch deadline (167 s) is past stop's wait (30 s)
    local = write_checkpoint(tmp_path / "local", random_model(1, BIG))
    start(fuser, "drip-long", [{"peer_id": "liar"}, {"path": str(local)}], tmp_path / "out")
    wait_until(lambda: drip.calls, timeout_s=30, interval_s=0.05, what="the fusion's first pull")
    stopped = api(fuser, "POST", "/fuse/stop").json()
    # STOPPED means the worker ended: its pull was cancelled, not waited out (STOPPING then)
    assert stopped["phase"] == "STOPPED", stopped
    calls = len(drip.calls)
    honest_fusion_works(fuser, tmp_path, "after-stop")  # the gate is free: no 409
    assert len(drip.calls) == calls
    assert not (tmp_path / "out").exists()
