"""The /api/v1/train routes on the real app, with the real service (single worker, no transport)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlnode.api.app import create_app
from mlnode.api.testing import make_settings
from mlnode.common.testing import wait_until
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainFigures, TrainFigureUpdate


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path, train={"device": "cpu", "torch_threads": 1, "join_timeout_s": 0.5}
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait_phase(client: TestClient, phases: set[str], timeout: float = 60) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get("/api/v1/train/status").json(),
        lambda b: b["phase"] in phases,
        timeout_s=timeout,
        what=f"phase in {phases}",
    )
    return body


def test_a_single_worker_trains_to_the_end(client, make_request) -> None:
    response = client.post("/api/v1/train/start", json=make_request())
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "TRAIN"
    assert client.post("/api/v1/train/start", json=make_request()).status_code == 409
    assert client.get("/api/v1/state").json()["state"] in ("TRAIN", "STOPPED")

    body = wait_phase(client, {"FINISHED", "FAILED"})

    assert body["phase"] == "FINISHED", body["last_error"]
    progress = body["progress"]
    assert progress["outer_round"] == 4 and progress["inner_step"] == 20
    assert progress["loss_history"][-1]["loss"] < progress["loss_history"][0]["loss"]
    assert progress["weights_sha256"] and progress["weights_agree"] is True
    assert Path(progress["last_checkpoint"], "model.safetensors").is_file()
    metrics = client.get("/metrics").text
    assert "mlnode_train_outer_round 4.0" in metrics and "mlnode_train_loss" in metrics


def test_stop_ends_the_job(client, make_request) -> None:
    client.post("/api/v1/train/start", json=make_request(optim={"total_steps": 100000}))

    body = client.post("/api/v1/train/stop").json()

    assert body["phase"] == "STOPPED" and body["running"] is False


def test_the_legacy_body_is_mapped(client, make_request) -> None:
    typed = make_request()
    config = {k: v for k, v in typed.items() if k not in {"rank", "world_size", "peers", "task_id"}}
    legacy = {
        "train_config": config,
        "train_env": {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "10.0.0.1", "TASK_ID": "t9"},
    }

    response = client.post("/api/v1/train/start", json=legacy)

    assert response.status_code == 200, response.text
    assert response.json()["progress"]["task_id"] == "t9"
    assert wait_phase(client, {"FINISHED", "FAILED"})["phase"] == "FINISHED"


def test_a_legacy_body_without_our_fields_gets_a_422_that_explains(client) -> None:
    legacy = {"train_config": {"project": "x"}, "train_env": {"RANK": "1", "WORLD_SIZE": "2"}}

    response = client.post("/api/v1/train/start", json=legacy)

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "expects" in message and "model" in message and "dataset" in message


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"model": {}}, "model"),
        ({"rank": 3}, "rank"),
        ({"world_size": 3, "peers": []}, "peers"),
        ({"diloco": {"compression": "zip"}}, "compression"),
        ({"optim": {"batch_size": 8, "micro_batch_size": 3}}, "micro_batch_size"),
        ({"task_id": "../etc"}, "task_id"),
    ],
)
def test_bad_bodies_get_422(client, make_request, change, needle) -> None:
    response = client.post("/api/v1/train/start", json=make_request(**change))

    assert response.status_code == 422
    assert needle in response.text


def test_a_missing_dataset_is_a_422_and_the_service_stays_healthy(client, make_request) -> None:
    body = make_request(dataset={"path": "/nonexistent/corpus.txt"})

    response = client.post("/api/v1/train/start", json=body)

    assert response.status_code == 422
    assert "dataset.path" in response.json()["error"]["message"]
    status = client.get("/api/v1/train/status").json()
    assert status["healthy"] is True and status["running"] is False


def test_an_unknown_peer_is_left_out_and_the_worker_trains_on(client, make_request) -> None:
    body = make_request(0, 2, peers=[{"peer_id": "ghost", "rank": 1}])

    assert client.post("/api/v1/train/start", json=body).status_code == 200
    status = wait_phase(client, {"FINISHED", "FAILED"})

    assert status["phase"] == "FINISHED", status["last_error"]
    assert "ghost" in status["progress"]["round_failures"]
    assert "send failed" in status["progress"]["round_failures"]["ghost"]
    assert status["progress"]["peers_alive"] == []


def test_progress_figures_are_checked_by_name_and_type() -> None:
    progress = TrainProgress("t", 0, 1)
    progress.set(outer_round=3, peers_alive=["w1"])
    with pytest.raises(ValueError, match="outer_rond"):
        progress.set(outer_rond=4)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="outer_round"):
        progress.set(outer_round="three")  # type: ignore[arg-type]
    assert progress.snapshot().outer_round == 3


def test_the_typed_update_names_every_figure() -> None:
    assert TrainFigureUpdate.__annotations__.keys() == TrainFigures.model_fields.keys()
