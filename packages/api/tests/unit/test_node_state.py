import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mlnode.common.testing import wait_until

from .conftest import make_app


def state(client: TestClient) -> str:
    state: str = client.get("/api/v1/state").json()["state"]
    return state


def wait_state(client: TestClient, wanted: str) -> None:
    wait_until(lambda: state(client), lambda s: s == wanted, timeout_s=2, what=f"state {wanted}")


def wait_unready(client: TestClient) -> None:
    wait_until(
        lambda: client.get("/readyz").status_code, lambda c: c == 503, timeout_s=2, what="503"
    )


def test_fresh_node_is_stopped(client: TestClient) -> None:
    body = client.get("/api/v1/state").json()
    assert body["state"] == "STOPPED"
    assert {s["kind"] for s in body["services"]} == {"POW", "TRAIN"}


def test_start_sets_state_and_conflicting_start_is_409_naming_it(client: TestClient) -> None:
    assert client.post("/api/v1/test/pow/start", json={"seconds": 30}).status_code == 200
    assert state(client) == "POW"
    answer = client.post("/api/v1/test/train/start", json={"seconds": 30})
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "service_conflict" and "POW is running" in error["message"]
    assert state(client) == "POW"


@pytest.mark.parametrize("setup", ["idle", "running", "failed", "finished", "stopped"])
def test_stop_from_every_state_ends_stopped(client: TestClient, setup: str) -> None:
    if setup == "running":
        client.post("/api/v1/test/pow/start", json={"seconds": 30})
    elif setup == "failed":
        client.post("/api/v1/test/pow/start", json={"seconds": 0, "fail": True})
        wait_unready(client)
    elif setup == "finished":
        client.post("/api/v1/test/pow/start", json={"seconds": 0})
        wait_state(client, "STOPPED")
    elif setup == "stopped":
        client.post("/api/v1/test/pow/start", json={"seconds": 30})
        client.post("/api/v1/stop")
    answer = client.post("/api/v1/stop")
    assert answer.status_code == 200 and answer.json() == {"status": "OK"}
    assert state(client) == "STOPPED"
    assert client.get("/readyz").status_code == 200
    assert client.post("/api/v1/test/train/start", json={"seconds": 30}).status_code == 200
    assert state(client) == "TRAIN"


def test_worker_failure_shows_in_status_readyz_and_metrics(client: TestClient) -> None:
    client.post("/api/v1/test/pow/start", json={"seconds": 0, "fail": True})
    wait_unready(client)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["problems"] == ["POW: RuntimeError: worker exploded"]
    pow_status = next(
        s for s in client.get("/api/v1/state").json()["services"] if s["kind"] == "POW"
    )
    assert (
        pow_status["phase"] == "FAILED"
        and pow_status["last_error"] == "RuntimeError: worker exploded"
    )
    assert 'mlnode_service_healthy{service="POW"} 0.0' in client.get("/metrics").text


async def test_two_concurrent_starts_exactly_one_wins(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        answers = await asyncio.gather(
            client.post("/api/v1/test/pow/start", json={"seconds": 30}),
            client.post("/api/v1/test/train/start", json={"seconds": 30}),
        )
        assert sorted(a.status_code for a in answers) == [200, 409]
        winner = "POW" if answers[0].status_code == 200 else "TRAIN"
        assert (await client.get("/api/v1/state")).json()["state"] == winner
        await client.post("/api/v1/stop")


def test_status_routes_answer_while_a_service_runs(client: TestClient) -> None:
    client.post("/api/v1/test/pow/start", json={"seconds": 30})
    for path in (
        "/api/v1/state",
        "/livez",
        "/readyz",
        "/health",
        "/metrics",
        "/api/v1/capabilities",
    ):
        assert client.get(path).status_code == 200, path
    assert 'mlnode_node_state{state="POW"} 1.0' in client.get("/metrics").text
