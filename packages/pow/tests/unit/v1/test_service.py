"""PowService behind the /pow routes, in process: init, re-init, phases, validation, status."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from mlnode.common.context import NodeContext
from mlnode.common.errors import MLNodeError
from mlnode.common.lifecycle import ServiceGate
from mlnode.common.settings import NodeSettings
from mlnode.common.testing import wait_until
from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.pow.v1.routes import router
from mlnode.pow.v1.service import PowService
from mlnode.pow.v1.settings import PowSettings


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as r:
        yield r


@pytest.fixture
def app_parts() -> Iterator[tuple[TestClient, PowService, CollectorRegistry]]:
    """A minimal app with the pow router, a real PowService and its metrics registry."""
    gate, registry = ServiceGate(), CollectorRegistry()
    settings = PowSettings(device="cpu", callback_backoff_s=0.05, callback_backoff_max_s=0.2)
    ctx = NodeContext(settings=NodeSettings(_env_file=None), gate=gate, metrics=registry)
    service = PowService(settings, ctx)
    gate.register(service)
    app = FastAPI()
    app.state.gate = gate
    app.include_router(router, prefix="/api/v1")

    @app.exception_handler(MLNodeError)
    async def _error(_: Request, exc: MLNodeError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    with TestClient(app) as client:
        yield client, service, registry
        client.post("/api/v1/pow/stop")
        assert client.portal is not None
        client.portal.call(service.sender.close)


def init_body(vectors: dict[str, Any], url: str, **changes: Any) -> dict[str, Any]:
    body = {
        "block_hash": vectors["block_hash"],
        "block_height": vectors["block_height"],
        "public_key": vectors["public_key"],
        "batch_size": 32,
        "r_target": vectors["r_target_for_tests"],
        "fraud_threshold": 1e-7,
        "params": copy.deepcopy(vectors["params"]),
        "node_id": 0,
        "node_count": 1,
        "url": url,
    }
    body.update(changes)
    return body


def wait_status(client: TestClient, status: str, timeout_s: float = 60) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get("/api/v1/pow/status").json(),
        lambda b: b["status"] == status and b["is_model_initialized"],
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"PoW {status}",
    )
    return body


def test_status_before_init(app_parts: Any) -> None:
    client, _, _ = app_parts
    body = client.get("/api/v1/pow/status").json()
    assert body["status"] == "NOT_LOADED"
    assert body["is_model_initialized"] is False


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"node_id": 2, "node_count": 2}, "node_id"),
        ({"params": {"dim": 130}}, "params"),
    ],
)
def test_impossible_init_is_422(
    app_parts: Any, vectors: dict[str, Any], change: dict[str, Any], param: str
) -> None:
    client, _, _ = app_parts
    body = init_body(vectors, "http://127.0.0.1:1")
    if "params" in change:
        body["params"].update(change.pop("params"))
    body.update(change)
    response = client.post("/api/v1/pow/init", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param


def test_validate_and_phase_need_init(app_parts: Any) -> None:
    client, _, _ = app_parts
    batch = {"public_key": "k", "block_hash": "h", "block_height": 1, "nonces": [1], "dist": [1.0]}
    assert client.post("/api/v1/pow/validate", json={**batch, "node_id": 0}).status_code == 409
    assert client.post("/api/v1/pow/phase/generate").status_code == 409


def test_reinit_reuses_model_and_validates(
    app_parts: Any, vectors: dict[str, Any], receiver: CallbackReceiver
) -> None:
    client, service, registry = app_parts
    body = init_body(vectors, receiver.url)
    assert client.post("/api/v1/pow/init/validate", json=body).status_code == 200
    wait_status(client, "VALIDATING")
    assert client.post("/api/v1/pow/init/validate", json=body).status_code == 200
    status = wait_status(client, "VALIDATING")
    assert status["model_builds"] == 1
    example = vectors["validation_examples"]["fraud_10pct"]
    batch = {
        "public_key": vectors["public_key"],
        "block_hash": vectors["block_hash"],
        "block_height": vectors["block_height"],
        "nonces": example["batch_nonces"],
        "dist": example["claimed_dist"],
        "node_id": 3,
    }
    assert client.post("/api/v1/pow/validate", json=batch).status_code == 200
    (verdict,) = receiver.wait_for("validated", lambda b: len(b) == 1, timeout_s=60)
    assert verdict["n_invalid"] == 5 and verdict["fraud_detected"] is True
    assert verdict["received_dist"] == example["claimed_dist"]
    assert verdict["node_id"] == 3
    metrics = generate_latest(registry).decode()
    assert "mlnode_pow_frauds_detected_total 1.0" in metrics
    assert 'mlnode_pow_phase{phase="VALIDATING"} 1.0' in metrics
    other = init_body(vectors, receiver.url, block_hash="another-block")
    client.post("/api/v1/pow/init", json=other)
    assert wait_status(client, "IDLE")["model_builds"] == 2


def test_malformed_batches_are_422_and_worker_survives(
    app_parts: Any, vectors: dict[str, Any], receiver: CallbackReceiver
) -> None:
    client, service, _ = app_parts
    client.post("/api/v1/pow/init/validate", json=init_body(vectors, receiver.url))
    wait_status(client, "VALIDATING")
    good = {
        "public_key": vectors["public_key"],
        "block_hash": vectors["block_hash"],
        "block_height": 1,
        "nonces": [0, 1],
        "dist": [1.0, 1.0],
        "node_id": 0,
    }
    cases: dict[str, dict[str, Any]] = {
        "nonces": {"nonces": [0, 0]},
        "dist": {"dist": [1.0]},
        "block_hash": {"block_hash": "stale"},
    }
    for param, change in cases.items():
        response = client.post("/api/v1/pow/validate", json={**good, **change})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param
    too_many = {"nonces": list(range(10_001)), "dist": [1.0] * 10_001}
    response = client.post("/api/v1/pow/validate", json={**good, **too_many})
    assert response.status_code == 422 and "at most 10000" in response.text
    raw = json.dumps({**good, "dist": [1.0, 2.0]}).replace("2.0", "NaN")
    headers = {"content-type": "application/json"}
    response = client.post("/api/v1/pow/validate", content=raw, headers=headers)
    assert response.status_code == 422 and response.json()["error"]["param"] == "dist"
    assert client.post("/api/v1/pow/validate", json=good).status_code == 200
    receiver.wait_for("validated", lambda b: len(b) == 1, timeout_s=60)
    assert service.pow_status().status == "VALIDATING"


def test_generate_then_phase_switch_and_stop(
    app_parts: Any, vectors: dict[str, Any], receiver: CallbackReceiver
) -> None:
    client, _, _ = app_parts
    client.post("/api/v1/pow/init/generate", json=init_body(vectors, receiver.url))
    wait_status(client, "GENERATING")
    batches = receiver.wait_for("generated", lambda b: len(b) >= 2, timeout_s=60)
    assert all(d < vectors["r_target_for_tests"] for b in batches for d in b["dist"])
    assert client.post("/api/v1/pow/phase/validate").json()["status"] == "VALIDATING"
    stopped = client.post("/api/v1/pow/stop").json()
    assert stopped["status"] == "STOPPED" and stopped["is_model_initialized"] is False
    assert stopped["nonces_checked"] >= 64 and stopped["proofs_found"] >= 2


def test_reinit_continues_the_search_without_repeating_nonces(
    app_parts: Any, vectors: dict[str, Any], receiver: CallbackReceiver
) -> None:
    client, _, _ = app_parts
    body = init_body(vectors, receiver.url, batch_size=16)
    client.post("/api/v1/pow/init/generate", json=body)
    first = len(receiver.wait_for("generated", lambda b: len(b) >= 2, timeout_s=60))
    client.post("/api/v1/pow/init/generate", json=body)
    receiver.wait_for("generated", lambda b: len(b) >= first + 2, timeout_s=60)
    client.post("/api/v1/pow/stop")
    nonces = [n for b in receiver.bodies("generated") for n in b["nonces"]]
    assert len(nonces) == len(set(nonces))


def bare_service() -> PowService:
    ctx = NodeContext(settings=NodeSettings(_env_file=None))
    service = PowService(PowSettings(_env_file=None, device="cpu"), ctx)
    ctx.gate.register(service)
    return service


async def test_stop_while_a_model_build_runs_leaves_the_loop_free() -> None:
    service = bare_service()
    building, loop_ran = threading.Event(), threading.Event()
    freed_by_loop: list[bool] = []

    def build() -> None:  # holds the cache's lock as a build in progress does
        with service.models._lock:
            building.set()
            freed_by_loop.append(loop_ran.wait(10))

    builder = threading.Thread(target=build)
    builder.start()
    building.wait(5)
    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0.05)  # stop now waits for the build
    loop_ran.set()
    await stopping
    builder.join(15)
    assert freed_by_loop == [True]
    await service.sender.close()


async def test_close_with_undelivered_callbacks_leaves_the_loop_free() -> None:
    service = bare_service()
    with CallbackReceiver() as receiver:
        receiver.status_code = 503  # the network node is down: the callback stays pending
        service.sender.start()
        service.sender.submit(f"{receiver.url}/generated", {"i": 0})
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0.2)  # close flushes for up to 2 s; the loop runs meanwhile
        assert not closing.done()
        await closing
    assert service.sender.stats().dropped == 1
