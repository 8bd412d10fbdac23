from typing import Any

import httpx
import pytest

from mlnode.common.testing.peer_mesh import MeshNode, client_for, main, register_mesh


class FakeNodes:
    """The identity and peers routes of several nodes, behind one httpx transport."""

    def __init__(self, names, refuse_at=None):
        self.keys = {f"{n}:8080": f"key-of-{n}" for n in names}
        self.peers: dict[str, dict[str, Any]] = {f"{n}:8080": {} for n in names}
        self.refuse_at = refuse_at

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        if request.url.path == "/api/v1/identity" and request.method == "GET":
            return httpx.Response(200, json={"public_key": self.keys[host], "fingerprint": "f"})
        if request.url.path.startswith("/api/v1/peers/") and request.method == "PUT":
            if host == self.refuse_at:
                return httpx.Response(422, json={"error": {"message": "bad key"}})
            peer_id = request.url.path.rsplit("/", 1)[1]
            self.peers[host][peer_id] = httpx.Response(200, content=request.content).json()
            return httpx.Response(200, json={})
        return httpx.Response(404)


def nodes(*names):
    return [MeshNode(n, f"http://{n}:8080", f"{n}:50051") for n in names]


def test_every_node_learns_every_other_key_and_address():
    fake = FakeNodes(["a", "b", "c"])
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:
        pairs = register_mesh(client, nodes("a", "b", "c"), tasks=["t1"])
    assert len(pairs) == 6
    assert set(fake.peers["a:8080"]) == {"b", "c"}
    assert fake.peers["b:8080"]["c"]["tasks"] == ["t1"]
    assert fake.peers["c:8080"]["a"] == {
        "peer_id": "a",
        "public_key": "key-of-a",
        "address": "a:50051",
        "tasks": ["t1"],
    }


def test_without_tasks_peers_are_trusted_for_any_task():
    fake = FakeNodes(["a", "b"])
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:
        register_mesh(client, nodes("a", "b"))
    assert fake.peers["a:8080"]["b"]["tasks"] is None  # [] would allow no task at all


def test_a_refusing_node_raises():
    fake = FakeNodes(["a", "b"], refuse_at="b:8080")
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:
        with pytest.raises(httpx.HTTPStatusError):
            register_mesh(client, nodes("a", "b"))


@pytest.mark.parametrize(
    "spec",
    ["node1", "node1=http://h:1", "node1=ftp://h:1,h:2", "=http://h:1,h:2", "n=http://h:1,h"],
)
def test_bad_node_specs_are_refused(spec):
    with pytest.raises(ValueError, match="is not name="):
        MeshNode.parse(spec)


def test_node_spec_parses():
    assert MeshNode.parse("n1=http://node1:8080/,node1:50051") == MeshNode(
        "n1", "http://node1:8080", "node1:50051"
    )


def test_main_fails_with_the_reason_when_nodes_never_come_up(caplog):
    assert main(["x=http://127.0.0.1:9,127.0.0.1:10", "--timeout", "0.5"]) == 1
    assert "not live after" in caplog.text and "x" in caplog.text


def test_every_request_carries_the_token_when_nodes_have_one():
    fake = FakeNodes(["a", "b"])
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return fake(request)

    with client_for("s3cret", httpx.MockTransport(handler)) as client:
        register_mesh(client, nodes("a", "b"))
    assert seen and set(seen) == {"Bearer s3cret"}
    with client_for(None, httpx.MockTransport(handler)) as client:
        client.get("http://a:8080/api/v1/identity")
    assert seen[-1] is None


def test_main_rejects_a_malformed_node_spec(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["node1=http://node1:8080"])
    assert exit_info.value.code == 2
    assert "is not name=http://host:port,host:grpc_port" in capsys.readouterr().err


def test_a_node_with_a_token_file_gets_its_own_token(tmp_path):
    fake = FakeNodes(["a", "b"])
    seen: dict[str, set[str | None]] = {}

    def handler(request):
        seen.setdefault(request.url.host, set()).add(request.headers.get("authorization"))
        return fake(request)

    token_file = tmp_path / "a-token"
    token_file.write_text("a-secret\n")
    token_file.chmod(0o600)
    mesh = [
        MeshNode.parse(f"a=http://a:8080,a:50051,{token_file}"),
        MeshNode.parse(f"b=http://b:8080,b:50051,{tmp_path / 'missing'}"),
    ]
    with client_for("shared", httpx.MockTransport(handler)) as client:
        register_mesh(client, mesh)
    assert seen == {"a": {"Bearer a-secret"}, "b": {"Bearer shared"}}
