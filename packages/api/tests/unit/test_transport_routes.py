"""Identity and known-peer routes of a real app (lifespan included, gRPC on a free port)."""

import base64
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlnode.api.app import create_app
from mlnode.api.settings import MLNodeSettings
from mlnode.api.testing import make_settings
from mlnode.common.settings import NodeSettings
from mlnode.common.transport.auth import Identity


def key() -> str:
    return base64.b64encode(Identity.generate().public_key).decode()


def app_client(state_dir: Path) -> TestClient:
    return TestClient(create_app(make_settings(state_dir, node={"state_dir": state_dir})))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path) as c:
        yield c


def test_identity_is_created_once_and_kept(tmp_path: Path) -> None:
    with app_client(tmp_path) as c:
        first = c.get("/api/v1/identity").json()
    assert stat.S_IMODE((tmp_path / "identity.key").stat().st_mode) == 0o600
    assert len(base64.b64decode(first["public_key"])) == 32 and first["fingerprint"]
    with app_client(tmp_path) as c:
        assert c.get("/api/v1/identity").json() == first


def test_peer_crud_and_persistence(tmp_path: Path) -> None:
    k = key()
    with app_client(tmp_path) as c:
        body = {"public_key": k, "address": "10.0.0.2:50051", "tasks": ["train-1"]}
        r = c.put("/api/v1/peers/node-2", json=body)
        assert r.status_code == 200 and r.json()["peer_id"] == "node-2"
        assert c.get("/api/v1/peers/node-2").json()["tasks"] == ["train-1"]
    with app_client(tmp_path) as c:  # survives a restart
        peers = c.get("/api/v1/peers").json()["peers"]
        assert [(p["peer_id"], p["public_key"], p["address"]) for p in peers] == [
            ("node-2", k, "10.0.0.2:50051")
        ]
        assert c.delete("/api/v1/peers/node-2").status_code == 204
        assert c.get("/api/v1/peers/node-2").status_code == 404
        assert c.delete("/api/v1/peers/node-2").status_code == 404


def test_put_set_replaces_everything_at_once(client: TestClient) -> None:
    client.put("/api/v1/peers/old", json={"public_key": key()})
    new: list[dict[str, Any]] = [
        {"peer_id": "a", "public_key": key()},
        {"peer_id": "b", "public_key": key(), "tasks": None},
    ]
    r = client.put("/api/v1/peers", json={"peers": new})
    assert r.status_code == 200
    assert [p["peer_id"] for p in client.get("/api/v1/peers").json()["peers"]] == ["a", "b"]
    twin = [{"peer_id": "c", "public_key": new[0]["public_key"]}, new[0]]
    r = client.put("/api/v1/peers", json={"peers": twin})
    assert r.status_code == 422 and "same public_key" in r.json()["error"]["message"]
    assert [p["peer_id"] for p in client.get("/api/v1/peers").json()["peers"]] == ["a", "b"]


@pytest.mark.parametrize(
    "body",
    [
        {"public_key": "not-base64!"},
        {"public_key": base64.b64encode(b"x" * 31).decode()},
        {"public_key": ""},
        {},
        {"public_key": "AAAA", "address": "nohostport"},
    ],
)
def test_malformed_peer_bodies_are_422(client: TestClient, body: dict[str, object]) -> None:
    r = client.put("/api/v1/peers/p", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_bad_peer_ids_are_422(client: TestClient) -> None:
    assert client.put("/api/v1/peers/bad$id", json={"public_key": key()}).status_code == 422
    r = client.put("/api/v1/peers/a", json={"peer_id": "b", "public_key": key()})
    assert r.status_code == 422 and r.json()["error"]["param"] == "peer_id"
    r = client.put("/api/v1/peers", json={"peers": [{"peer_id": "x y", "public_key": key()}]})
    assert r.status_code == 422


def test_probe_of_unknown_peer_is_403_and_inbox_starts_empty(client: TestClient) -> None:
    r = client.post("/api/v1/peers/nobody/probe", json={"task": "t"})
    assert r.status_code == 403
    assert client.get("/api/v1/transport/inbox").json() == {"deliveries": []}


def test_two_apps_with_default_settings_can_run_side_by_side(tmp_path: Path) -> None:
    # the root conftest makes MLNODE_GRPC_PORT=0 for tests, so nothing fights over 50051
    first = MLNodeSettings(node=NodeSettings(state_dir=tmp_path / "a"))
    second = MLNodeSettings(node=NodeSettings(state_dir=tmp_path / "b"))
    with TestClient(create_app(first)) as a, TestClient(create_app(second)) as b:
        assert a.get("/api/v1/identity").json() != b.get("/api/v1/identity").json()


def test_validation_errors_are_capped_and_long_lists_refused_early(client: TestClient) -> None:
    some = client.put("/api/v1/peers", json={"peers": [0] * 25})
    assert some.status_code == 422
    body = some.json()
    assert len(body["detail"]) == 20 and body["omitted"] == 5
    assert body["error"]["param"] == "peers.0"
    many = client.put("/api/v1/peers", json={"peers": [0] * 20_000})
    assert many.status_code == 422 and len(many.content) < 2048
    assert many.json()["error"]["param"] == "peers" and many.json()["omitted"] == 0
    assert "at most 10000" in many.json()["error"]["message"]
    # Past MLNODE_MAX_JSON_VALUES the body is not even parsed.
    huge = client.put("/api/v1/peers", json={"peers": [0] * ((1 << 20) + 1)})
    assert huge.status_code == 422 and huge.json()["error"]["code"] == "too_many_values"
    assert "MLNODE_MAX_JSON_VALUES" in huge.json()["error"]["message"]
