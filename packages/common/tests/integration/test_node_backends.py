import signal

import httpx
import pytest

from mlnode.common.testing import BackendUnavailable, CallbackReceiver, open_backend
from mlnode.common.testing.peer_mesh import MeshNode, register_mesh


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


def test_three_nodes_learn_each_others_keys(mlnode_factory, mlnode_backend):
    nodes = [mlnode_factory(f"node{i}") for i in (1, 2, 3)]
    if httpx.get(f"{nodes[0].url}/api/v1/identity").status_code == 404:
        pytest.skip("GET /api/v1/identity is not served yet (the transport issue adds it)")
    mesh = [MeshNode(n.name, n.url, n.peer_grpc_address) for n in nodes]
    with httpx.Client(timeout=10) as client:
        assert len(register_mesh(client, mesh)) == 6
        keys = {n.name: client.get(f"{n.url}/api/v1/identity").json()["public_key"] for n in nodes}
        for node in nodes:
            for peer in nodes:
                if peer is node:
                    continue
                known = client.get(f"{node.url}/api/v1/peers/{peer.name}")
                assert known.status_code == 200, known.text
                assert known.json()["public_key"] == keys[peer.name]


def test_nodes_reach_a_callback_receiver_on_the_test_machine(mlnode_backend):
    with CallbackReceiver(host=mlnode_backend.bind_host) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        node_side_url = f"http://{mlnode_backend.host_alias}:{port}"
        # What a node is handed as its callback base must point back at this receiver.
        assert node_side_url.startswith("http://")
        httpx.post(f"http://127.0.0.1:{port}/generated", json={"ok": True})
        assert receiver.received("/generated")[0]["body"] == {"ok": True}
