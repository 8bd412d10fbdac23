"""The fusion routes on a real app: 202 and progress, 422 before the job, failures in status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from mlnode.api.app import create_app
from mlnode.api.settings import MLNodeSettings
from mlnode.api.testing import make_settings
from mlnode.common.context import NodeContext
from mlnode.common.lifecycle import Service
from mlnode.common.testing import TransportHub, wait_until
from mlnode.common.transport.api import TensorMeta, TensorTransport
from mlnode.common.transport.errors import NotOffered
from mlnode.fuse.service import FuseService
from mlnode.fuse.testing import random_model, write_checkpoint

SHAPES = {"a.weight": (16, 4), "b.weight": (4,)}


def make_client(tmp_path: Path, transport: TensorTransport | None) -> TestClient:
    def services(settings: MLNodeSettings, ctx: NodeContext) -> list[Service[Any]]:
        return [FuseService(settings.fuse, ctx)]

    return TestClient(create_app(make_settings(tmp_path), services=services, transport=transport))


@pytest.fixture
def client(tmp_path: Path, network: TransportHub) -> Iterator[TestClient]:
    with make_client(tmp_path, network.node("me")) as c:
        yield c


@pytest.fixture
def models(tmp_path: Path) -> list[str]:
    return [
        str(write_checkpoint(tmp_path / name, random_model(seed, SHAPES)))
        for seed, name in ((1, "m1"), (2, "m2"))
    ]


def body(tmp_path: Path, models: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "task_id": "t",
        "method": "linear",
        "sources": [{"path": p} for p in models],
        "output": {"path": str(tmp_path / "out"), "dtype": "bfloat16"},
        **extra,
    }


def wait_done(client: TestClient) -> dict[str, Any]:
    status: dict[str, Any] = wait_until(
        lambda: client.get("/api/v1/fuse/status").json(),
        lambda s: s["phase"] not in ("STARTING", "RUNNING", "STOPPING"),
        what="fusion to end",
    )
    return status


def test_start_runs_in_the_background_and_reports_progress(
    client: TestClient, tmp_path: Path, models: list[str]
) -> None:
    response = client.post("/api/v1/fuse/start", json=body(tmp_path, models))
    assert response.status_code == 202, response.text
    assert response.json()["task_id"] == "t"
    status = wait_done(client)
    assert status["phase"] == "FINISHED", status
    assert status["tensors_done"] == status["tensors_total"] == 2
    assert status["bytes_done"] == status["bytes_total"] == (16 * 4 + 4) * 2
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert client.get("/api/v1/state").json()["state"] == "STOPPED"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "magic"}, "method"),
        ({"params": {"alpha": 2}}, "linear has no parameter alpha"),
        ({"sources": [{"path": "/nonexistent/model"}]}, "no such file or directory"),
        ({"sources": [{"path": "x", "peer_id": "y"}]}, "exactly one of path and peer_id"),
        ({"output": {"path": "o", "max_shard_size": "lots"}}, "not a size"),
        ({"keep_base": ["x*"]}, "keep_base needs a base"),
    ],
)
def test_bad_requests_are_422_before_the_job(
    client: TestClient, tmp_path: Path, models: list[str], change: dict[str, Any], message: str
) -> None:
    response = client.post("/api/v1/fuse/start", json={**body(tmp_path, models), **change})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert client.get("/api/v1/fuse/status").json()["phase"] in ("IDLE", "STOPPED")


def test_mismatched_models_are_422_naming_the_tensors(
    client: TestClient, tmp_path: Path, models: list[str]
) -> None:
    other = write_checkpoint(tmp_path / "m3", {"a.weight": torch.ones(4, 16)})
    response = client.post("/api/v1/fuse/start", json=body(tmp_path, [models[0], str(other)]))
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "b.weight missing from" in message and "a.weight: shape [16, 4]" in message


def test_nan_fails_the_job_with_the_tensor_named(
    client: TestClient, tmp_path: Path, models: list[str]
) -> None:
    bad = random_model(3, SHAPES)
    bad["b.weight"][0] = float("inf")
    path = str(write_checkpoint(tmp_path / "bad", bad))
    assert (
        client.post("/api/v1/fuse/start", json=body(tmp_path, [models[0], path])).status_code == 202
    )
    status = wait_done(client)
    assert status["phase"] == "FAILED"
    assert "b.weight" in status["error"] and "NaN or inf" in status["error"]
    assert not (tmp_path / "out").exists()
    assert client.post("/api/v1/fuse/stop").json()["phase"] == "STOPPED"


def test_existing_output_is_refused(client: TestClient, tmp_path: Path, models: list[str]) -> None:
    (tmp_path / "out").mkdir()
    response = client.post("/api/v1/fuse/start", json=body(tmp_path, models))
    assert response.status_code == 422 and "exists already" in response.text


def test_share_offers_the_model_to_the_transport(
    client: TestClient, network: TransportHub, models: list[str]
) -> None:
    response = client.post("/api/v1/fuse/share", json={"task_id": "t", "path": models[0]})
    assert response.status_code == 200, response.text
    assert response.json() == {"task_id": "t", "path": models[0], "tensors": 2, "bytes": 272}
    provider = network.node("me").providers.get("t")
    assert {m.name for m in provider.describe()} == set(SHAPES)
    assert [s["task_id"] for s in client.get("/api/v1/fuse/shares").json()] == ["t"]
    assert client.delete("/api/v1/fuse/share/t").status_code == 200
    with pytest.raises(NotOffered):
        network.node("me").providers.get("t")
    assert client.delete("/api/v1/fuse/share/t").status_code == 404


def test_share_of_a_missing_model_is_422(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/api/v1/fuse/share", json={"task_id": "t", "path": str(tmp_path)})
    assert response.status_code == 422


def test_over_the_node_grpc_transport_an_unregistered_peer_is_403(
    tmp_path: Path, models: list[str]
) -> None:
    with make_client(tmp_path, None) as client:  # the node's own, signed transport
        peer = body(tmp_path, models, sources=[{"peer_id": "p"}])
        assert client.post("/api/v1/fuse/start", json=peer).status_code == 403
        share = client.post("/api/v1/fuse/share", json={"task_id": "t", "path": models[0]})
        assert share.status_code == 200, share.text


def test_unknown_peer_is_403(client: TestClient, tmp_path: Path, models: list[str]) -> None:
    peer = body(tmp_path, models, sources=[{"peer_id": "stranger"}])
    response = client.post("/api/v1/fuse/start", json=peer)
    assert response.status_code == 403


class SlowModel:
    """A shared model whose tensors take a while to arrive."""

    def __init__(self, count: int) -> None:
        self.names = [f"t{i}" for i in range(count)]

    def describe(self) -> list[TensorMeta]:
        return [TensorMeta(n, torch.float32, (8,)) for n in self.names]

    def get(self, name: str) -> torch.Tensor:
        time.sleep(0.05)
        return torch.ones(8)


def test_stop_mid_fusion_leaves_no_output(
    client: TestClient, network: TransportHub, tmp_path: Path
) -> None:
    slow = network.node("slow")
    slow.known.add("me")
    network.node("me").known.add("slow")
    slow.serve("t", SlowModel(200))
    request = body(tmp_path, [], sources=[{"peer_id": "slow"}])
    assert client.post("/api/v1/fuse/start", json=request).status_code == 202
    wait_until(
        lambda: client.get("/api/v1/fuse/status").json()["tensors_done"],
        lambda done: done >= 2,
        timeout_s=10,
        what="two tensors fused",
    )
    stopped = client.post("/api/v1/fuse/stop").json()
    assert stopped["phase"] == "STOPPED"
    assert 2 <= stopped["tensors_done"] < 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
