"""Attacks on a real MLNode's transport port while an honest peer keeps pushing to it.

Node "b" is the target (tight limits so that each attack reaches them quickly); node "honest-a"
pushes to it through its REST probe (a real signed send); "mallory" is a key b registered for
the task, driven from this process. Each attack is refused or bounded, the honest pushes keep
succeeding, b's memory and thread count stay bounded, and what b accepted before is kept.
Latencies are printed (the ratio under attack is measured by `make bench`, not asserted here).
"""

import base64
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import torch

from mlnode.common.testing import wait_until
from mlnode.common.testing.hostile import Flood, HostileClient, half_open_call, hello_metadata
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.interceptors import FETCH, HELLO, LIST, PUSH

MIB = 1 << 20
#: How much the target's resident memory may grow during any attack here.
RSS_BOUND = 384 * MIB
#: Threads the target's transport may still start: its workers and its handshake threads.
POOLS = 8 + 4
TARGET_ENV = {
    "MLNODE_GRPC_WORKERS": "8",
    "MLNODE_GRPC_MAX_CALLS_PER_PEER": "2",
    "MLNODE_GRPC_IDLE_TIMEOUT_S": "2",
    "MLNODE_GRPC_MAX_INBOX_BYTES": str(256 * MIB),  # a peer's share: 128 MiB
    "MLNODE_GRPC_MAX_INBOX_PEER_DELIVERIES": "8",
    "MLNODE_GRPC_INBOX_TTL_S": "8",
}


def status(node: MLNodeProcess, field: str) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * (1024 if field.startswith("Vm") else 1)
    raise AssertionError(field)


def key_of(node: MLNodeProcess) -> bytes:
    return base64.b64decode(httpx.get(f"{node.url}/api/v1/identity").json()["public_key"])


def register(node: MLNodeProcess, peer_id: str, key: bytes, address: str | None) -> None:
    body = {"public_key": base64.b64encode(key).decode(), "address": address, "tasks": ["t"]}
    r = httpx.put(f"{node.url}/api/v1/peers/{peer_id}", json=body)
    assert r.status_code == 200, r.text


def probe(a: MLNodeProcess, tag: str, nbytes: int = MIB) -> float:
    """An honest signed push from a to b; its duration."""
    r = httpx.post(
        f"{a.url}/api/v1/peers/b/probe",
        json={"task": "t", "tag": tag, "nbytes": nbytes},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    seconds: float = r.json()["seconds"]
    return seconds


def deliveries(node: MLNodeProcess) -> list[tuple[str, str]]:
    body = httpx.get(f"{node.url}/api/v1/transport/inbox", timeout=60).json()
    return [(d["peer_id"], d["tag"]) for d in body["deliveries"]]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MLNodeProcess]]:
    root = tmp_path_factory.mktemp("hardening")
    a = MLNodeProcess(root / "a").start()
    b = MLNodeProcess(root / "b", TARGET_ENV).start()
    try:
        register(a, "b", key_of(b), b.grpc_address)
        register(b, "honest-a", key_of(a), None)
        yield {"a": a, "b": b}
    finally:
        a.kill()
        b.kill()


@pytest.fixture
def mallory(nodes: dict[str, MLNodeProcess]) -> Iterator[HostileClient]:
    me = Identity.generate()
    register(nodes["b"], "mallory", me.public_key, None)
    client = HostileClient(nodes["b"].grpc_address, key_of(nodes["b"]), me, "t")
    yield client
    client.close()
    httpx.delete(f"{nodes['b'].url}/api/v1/peers/mallory")


def test_unauthenticated_floods_hold_nothing(nodes: dict[str, MLNodeProcess]) -> None:
    a, b = nodes["a"], nodes["b"]
    idle = [probe(a, "idle") for _ in range(5)]  # replaced: one delivery
    rss, threads = status(b, "VmRSS"), status(b, "Threads")
    known = key_of(a)
    half_open = half_open_call(b.grpc_address, HELLO, hello_metadata(known, "t"))
    floods = [
        Flood(b.grpc_address, 300).start(),  # TCP only, no HTTP/2 preface
        Flood(b.grpc_address, 300, half_open).start(),  # a Hello naming a known key
        Flood(b.grpc_address, 100, half_open_call(b.grpc_address, PUSH)).start(),
        Flood(b.grpc_address, 100, half_open_call(b.grpc_address, FETCH)).start(),
    ]
    try:
        while any(f.opened < f.count for f in floods):
            time.sleep(0.1)
        attacked = [probe(a, "attacked") for _ in range(5)]
        assert status(b, "VmRSS") - rss < RSS_BOUND
        assert status(b, "Threads") <= threads + POOLS  # not one per hostile connection
    finally:
        for flood in floods:
            flood.stop()
    print(
        f"probe median idle {statistics.median(idle) * 1e3:.1f} ms, under 800 hostile "
        f"connections {statistics.median(attacked) * 1e3:.1f} ms"
    )
    assert {("honest-a", "idle"), ("honest-a", "attacked")} <= set(deliveries(b))


def test_a_registered_peers_idle_calls_are_capped_and_cut(
    nodes: dict[str, MLNodeProcess], mallory: HostileClient
) -> None:
    a, b = nodes["a"], nodes["b"]
    threads = status(b, "Threads")
    held = [mallory.idle_session(m) for m in (PUSH, FETCH, LIST) for _ in range(5)]
    for _ in range(3):
        probe(a, "beside-idle")
    assert status(b, "Threads") <= threads + POOLS
    for call in held:  # refused over the peer's 2 slots, or cut at the 2 s idle deadline
        assert call.exception(timeout=30) is not None or call.code() == grpc.StatusCode.OK
    codes = {call.code() for call in held}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert codes <= {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.NOT_FOUND,  # a List of a task nothing is offered for
        grpc.StatusCode.DATA_LOSS,
    }, codes
    time.sleep(0.5)  # the server frees the slots just after the client sees the end


def test_inbox_is_bounded_per_peer_and_expires(
    nodes: dict[str, MLNodeProcess], mallory: HostileClient
) -> None:
    a, b = nodes["a"], nodes["b"]
    probe(a, "kept")  # accepted before the flood
    rss = status(b, "VmRSS")
    big = torch.ones(16 * MIB, dtype=torch.float32)  # 64 MiB
    codes = [mallory.push({"w": big}, f"big{i}") for i in range(3)]
    assert codes == [grpc.StatusCode.OK] + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert "MAX_INBOX_PEER_BYTES" in (mallory.last_details or "")
    empty = [mallory.push({"e": torch.zeros(0)}, f"empty{i}") for i in range(10)]
    assert empty == [grpc.StatusCode.OK] * 7 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    assert "MAX_INBOX_PEER_DELIVERIES" in (mallory.last_details or "")
    probe(a, "beside-flood", 8 * MIB)  # another peer still has room
    assert status(b, "VmRSS") - rss < RSS_BOUND
    held = set(deliveries(b))
    assert {("honest-a", "kept"), ("honest-a", "beside-flood"), ("mallory", "big0")} <= held
    wait_until(  # nothing takes them: they expire (TTL 8 s)
        lambda: not any(peer == "mallory" for peer, _ in deliveries(b)),
        timeout_s=30,
        interval_s=0.5,
        what="mallory's deliveries to expire",
    )
    assert mallory.push({"w": big}, "after-expiry") == grpc.StatusCode.OK


def test_absurd_frames_and_refusals_say_little(
    nodes: dict[str, MLNodeProcess], mallory: HostileClient
) -> None:
    a, b = nodes["a"], nodes["b"]
    for shape, nbytes in [([0, 1 << 62, 4], 0), ([-3], 4), ([1 << 40, 1 << 40], 1 << 62)]:
        header = pb.TensorHeader(name="x", dtype="uint8", shape=shape, nbytes=nbytes, task="t")
        assert mallory.push_header(header) in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }, mallory.last_details
    header = pb.TensorHeader(name="x", dtype="complex64", shape=[1], nbytes=8, task="t")
    assert mallory.push_header(header) == grpc.StatusCode.INVALID_ARGUMENT
    refused = mallory.half_open(HELLO, hello_metadata(key_of(a), "other-task"))
    details = refused.exception(timeout=10).details()
    assert "not accepted for task" in details and "honest-a" not in details
    assert "Traceback" not in b.log()
    probe(a, "after-absurd")


def test_a_state_dir_others_may_write_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    planted = Identity.generate()
    key = base64.b64encode(planted.public_key).decode()
    (state / "peers.json").write_text(f'{{"peers": [{{"peer_id": "x", "public_key": "{key}"}}]}}')
    with pytest.raises(RuntimeError, match="may be written by other users"):
        MLNodeProcess(state, ready_timeout_s=60).start()  # exits at start-up, naming the path
