"""Colluding registered peers try to pin a real MLNode's transfer pool by dripping bytes.

Node "b" has 8 transfer threads, 2 calls per peer, 2 threads reserved (a quarter) and a floor of
1 KiB/s judged over 3 s of the peer's time. Four registered peers each keep their 2 calls open,
every call sending a valid push one byte every 0.5 s (inside the 5 s idle deadline). Before
the floor and the reserve they held every thread and honest pushes waited for the call deadline.
Now each dripping call is cut (CANCELLED) after ~3 s, calls past the shared part of the pool are
refused (RESOURCE_EXHAUSTED), and honest pushes from node "a" keep going through.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest

from mlnode.common.testing.hostile import HostileClient
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import AttackWatch, tree_rss
from mlnode.common.transport.auth import Identity

MIB = 1 << 20
ATTACKERS = 4
CALLS_PER_PEER = 2
ATTACK_S = 12.0
#: An honest 1 MiB push takes ~50 ms here; under the attack each must finish within this.
HONEST_BOUND_S = 3.0
LIVEZ_P99_S = 0.25
#: Measured: b's RSS grew by ~20 MiB during the attack.
RSS_GROWTH_BOUND = 256 * MIB
TARGET_ENV = {
    "MLNODE_GRPC_WORKERS": "8",
    "MLNODE_GRPC_MAX_CALLS_PER_PEER": str(CALLS_PER_PEER),
    "MLNODE_GRPC_IDLE_TIMEOUT_S": "5",
    "MLNODE_GRPC_MIN_BYTES_PER_S": "1024",
    "MLNODE_GRPC_RATE_WINDOW_S": "3",
}


def key_of(node: MLNodeProcess) -> bytes:
    return base64.b64decode(httpx.get(f"{node.url}/api/v1/identity").json()["public_key"])


def register(node: MLNodeProcess, peer_id: str, key: bytes, address: str | None) -> None:
    body = {"public_key": base64.b64encode(key).decode(), "address": address, "tasks": ["t"]}
    answer = httpx.put(f"{node.url}/api/v1/peers/{peer_id}", json=body)
    assert answer.status_code == 200, answer.text


def probe(a: MLNodeProcess, tag: str) -> float:
    """An honest signed 1 MiB push from a to b; its duration."""
    answer = httpx.post(
        f"{a.url}/api/v1/peers/b/probe",
        json={"task": "t", "tag": tag, "nbytes": MIB},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    seconds: float = answer.json()["seconds"]
    return seconds


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MLNodeProcess, ...]]:
    root = tmp_path_factory.mktemp("colluding")
    a = MLNodeProcess(root / "a").start()
    b = MLNodeProcess(root / "b", TARGET_ENV).start()
    try:
        register(a, "b", key_of(b), b.grpc_address)
        register(b, "honest-a", key_of(a), None)
        yield a, b
    finally:
        a.kill()
        b.kill()


def test_dripping_colluders_neither_pin_the_pool_nor_stall_honest_pushes(
    nodes: tuple[MLNodeProcess, ...],
) -> None:
    a, b = nodes
    assert b.proc is not None
    attackers = []
    for i in range(ATTACKERS):
        me = Identity.generate()
        register(b, f"mallory-{i}", me.public_key, None)
        attackers.append(HostileClient(b.grpc_address, key_of(b), me, "t"))
    codes: Counter[grpc.StatusCode] = Counter()
    lock = threading.Lock()
    ends = time.monotonic() + ATTACK_S

    def keep_dripping(client: HostileClient) -> None:
        while time.monotonic() < ends:
            try:
                code = client.drip(every_s=0.5)
            except grpc.RpcError as exc:  # its handshake was refused
                code = exc.code()
            with lock:
                codes[code] += 1
            if code is not grpc.StatusCode.CANCELLED:
                time.sleep(0.2)

    honest: list[float] = []
    baseline = tree_rss(b.proc.pid)
    with (
        ThreadPoolExecutor(ATTACKERS * CALLS_PER_PEER) as pool,
        AttackWatch(b.url, [b.proc.pid]) as watch,
    ):
        drips = [pool.submit(keep_dripping, c) for c in attackers for _ in range(CALLS_PER_PEER)]
        time.sleep(1.0)  # every attacker's calls are open
        while time.monotonic() < ends:
            honest.append(probe(a, "honest"))
            time.sleep(0.5)
        for drip in drips:
            drip.result(timeout=60)
    for client in attackers:
        client.close()
    print(f"honest pushes {[round(s, 3) for s in honest]} s; attackers got {dict(codes)}")
    assert len(honest) >= 10 and max(honest) < HONEST_BOUND_S
    assert codes[grpc.StatusCode.CANCELLED] >= ATTACKERS  # dripping calls are cut at the floor
    # UNAVAILABLE: gRPC's overload protection refusing a new stream on an attacker's connection
    # (REFUSED_STREAM) while its cut calls are being torn down.
    refused = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
    assert set(codes) <= {grpc.StatusCode.CANCELLED, *refused}
    assert watch.livez_p99_s() < LIVEZ_P99_S, watch.livez_p99_s()
    assert watch.peak_rss_bytes() - baseline < RSS_GROWTH_BOUND
