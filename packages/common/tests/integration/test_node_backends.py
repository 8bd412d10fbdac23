import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

from mlnode.common.testing import (
    BackendUnavailable,
    CallbackReceiver,
    free_port,
    open_backend,
    wait_until,
)
from mlnode.common.testing.peer_mesh import main as peer_mesh_main


@pytest.mark.parametrize("kind", ["process", "container"])
def test_each_backend_serves_and_stops_a_node(kind, tmp_path):
    try:
        backend = open_backend(kind, tmp_path)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    try:
        node = backend.start("node-a")
        assert httpx.get(f"{node.url}/livez").json()["status"] == "ok"
        assert httpx.get(f"{node.url}/api/v1/state").json()["state"] == "STOPPED"
        assert node.inference_url.startswith("http://") and node.inference_url != node.url
        # uvicorn re-raises SIGTERM after its graceful shutdown: -15 (process) or 143 (container).
        assert node.terminate() in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{node.url}/livez", timeout=2)
    finally:
        backend.close()


def test_a_killed_node_stops_answering(mlnode_factory):
    node = mlnode_factory("victim")
    node.kill()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{node.url}/livez", timeout=2)


def known_peer(node_url: str, peer_id: str) -> dict[str, Any]:
    """The peer entry from GET /api/v1/peers, whether it answers a list or {"peers": [...]}."""
    answer = httpx.get(f"{node_url}/api/v1/peers")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    entries = body.get("peers", body) if isinstance(body, dict) else body
    matching = [e for e in entries if e.get("peer_id") == peer_id]
    assert len(matching) == 1, f"{peer_id} not known at {node_url}: {body}"
    entry: dict[str, Any] = matching[0]
    return entry


def test_three_nodes_learn_each_others_keys_like_the_compose_init_step(mlnode_factory):
    nodes = [mlnode_factory(f"node{i}") for i in (1, 2, 3)]
    if httpx.get(f"{nodes[0].url}/api/v1/identity").status_code == 404:
        pytest.skip("GET /api/v1/identity is not served yet (the transport issue adds it)")
    specs = [f"{n.name}={n.url},{n.peer_grpc_address}" for n in nodes]
    assert peer_mesh_main([*specs, "--timeout", "30"]) == 0
    keys = {n.name: httpx.get(f"{n.url}/api/v1/identity").json()["public_key"] for n in nodes}
    for node in nodes:
        for peer in nodes:
            if peer is not node:
                entry = known_peer(node.url, peer.name)
                assert entry["public_key"] == keys[peer.name]
                assert entry["address"] == peer.peer_grpc_address


def answers(url: str) -> bool:
    try:
        httpx.get(url)
    except httpx.ConnectError:
        return False
    return True


def test_callback_receiver_runs_as_the_compose_service_does(tmp_path):
    port = free_port()
    journal = tmp_path / "callbacks.jsonl"
    command = [sys.executable, "-m", "mlnode.common.testing.callback_receiver"]
    proc = subprocess.Popen([*command, "--port", str(port), "--journal", str(journal)])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/livez"), timeout_s=5, interval_s=0.05, what="livez")
        assert httpx.post(f"{url}/validated", content=b'{"fraud_detected": false}').is_success
        assert httpx.get(f"{url}/received").json()[0]["body"] == {"fraud_detected": False}
        assert "/validated" in journal.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def test_nodes_reach_a_callback_receiver_on_the_test_machine(mlnode_backend):
    with CallbackReceiver(host=mlnode_backend.bind_host) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        node_side_url = f"http://{mlnode_backend.host_alias}:{port}"
        # What a node is handed as its callback base must point back at this receiver.
        assert node_side_url.startswith("http://")
        httpx.post(f"http://127.0.0.1:{port}/generated", json={"ok": True})
        assert receiver.received("/generated")[0]["body"] == {"ok": True}
