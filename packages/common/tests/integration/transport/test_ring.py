"""Real MLNode processes exchange signed tensors; peers are registered only through REST."""

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.diagnostics import tensor_digest
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport

GIB = 1 << 30


def identity_of(node: MLNodeProcess) -> str:
    key: str = httpx.get(f"{node.url}/api/v1/identity").json()["public_key"]
    return key


def register(
    node: MLNodeProcess, peer_id: str, key: str, address: str | None, tasks: list[str]
) -> None:
    body = {"public_key": key, "address": address, "tasks": tasks}
    r = httpx.put(f"{node.url}/api/v1/peers/{peer_id}", json=body)
    assert r.status_code == 200, r.text


def inbox(node: MLNodeProcess) -> list[dict[str, Any]]:
    deliveries: list[dict[str, Any]] = httpx.get(
        f"{node.url}/api/v1/transport/inbox", timeout=60
    ).json()["deliveries"]
    return deliveries


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MLNodeProcess]]:
    root = tmp_path_factory.mktemp("ring")
    started = {name: MLNodeProcess(root / name) for name in "abcd"}
    try:
        with ThreadPoolExecutor(4) as pool:  # start-up is mostly waiting: overlap it
            list(pool.map(MLNodeProcess.start, started.values()))
        yield started
    finally:
        for node in started.values():
            node.kill()


@pytest.fixture(scope="module")
def ring(nodes: dict[str, MLNodeProcess]) -> dict[str, MLNodeProcess]:
    """a, b and c know each other for task "ring"; d knows a, but nobody knows d."""
    keys = {name: identity_of(node) for name, node in nodes.items()}
    for name in "abc":
        for other in "abc".replace(name, ""):
            register(nodes[name], other, keys[other], nodes[other].grpc_address, ["ring"])
    register(nodes["d"], "a", keys["a"], nodes["a"].grpc_address, ["ring"])
    return nodes


def test_tensors_travel_around_the_ring(ring: dict[str, MLNodeProcess]) -> None:
    for sender, receiver in [("a", "b"), ("b", "c"), ("c", "a")]:
        r = httpx.post(
            f"{ring[sender].url}/api/v1/peers/{receiver}/probe",
            json={"task": "ring", "tag": "lap-1", "nbytes": 9 << 20},  # three 4 MiB chunks
            timeout=60,
        )
        assert r.status_code == 200, r.text
        sent = r.json()
        [delivery] = [d for d in inbox(ring[receiver]) if d["tag"] == "lap-1"]
        assert delivery["peer_id"] == sender and delivery["task"] == "ring"
        assert delivery["tensors"][0]["digest"] == sent["digest"]
        assert delivery["tensors"][0]["shape"] == [9 << 20]


def test_an_unregistered_fourth_node_is_refused(ring: dict[str, MLNodeProcess]) -> None:
    r = httpx.post(
        f"{ring['d'].url}/api/v1/peers/a/probe", json={"task": "ring", "tag": "intruder"}
    )
    assert r.status_code == 403, r.text
    assert "UNAUTHENTICATED" in r.json()["error"]["message"]
    assert all(d["peer_id"] != "d" and d["tag"] != "intruder" for d in inbox(ring["a"]))
    assert httpx.get(f"{ring['a'].url}/livez").status_code == 200


def test_wrong_task_is_refused(ring: dict[str, MLNodeProcess]) -> None:
    r = httpx.post(f"{ring['a'].url}/api/v1/peers/b/probe", json={"task": "other"})
    assert r.status_code == 403 and "not accepted for task" in r.text


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing")


def test_one_gib_tensor_with_bounded_receiver_memory(ring: dict[str, MLNodeProcess]) -> None:
    node = ring["c"]
    me = Identity.generate()
    register(node, "tester", base64.b64encode(me.public_key).decode(), None, ["big"])
    peers = KnownPeers()
    peers.put(Peer("c", base64.b64decode(identity_of(node)), node.grpc_address))
    sender = GrpcTransport(TransportSettings(), identity=me, peers=peers)  # client only
    tensor = torch.arange(GIB // 4, dtype=torch.int32)
    assert node.proc is not None
    rss_before = vm_kib(node.proc.pid, "VmRSS") * 1024
    start = time.monotonic()
    sender.send("c", {"big": tensor}, "big", "gib")
    seconds = time.monotonic() - start
    peak_growth = vm_kib(node.proc.pid, "VmHWM") * 1024 - rss_before
    print(f"1 GiB in {seconds:.1f} s; receiver peak grew by {peak_growth / GIB:.2f} GiB")
    assert peak_growth < 1.5 * GIB
    [delivery] = [d for d in inbox(node) if d["tag"] == "gib"]
    assert delivery["tensors"][0]["digest"] == tensor_digest(tensor)
    sender.stop()


def test_sigterm_exits_quickly_after_transfers(ring: dict[str, MLNodeProcess]) -> None:
    start = time.monotonic()
    ring["d"].terminate(timeout_s=10)
    assert time.monotonic() - start < 5
