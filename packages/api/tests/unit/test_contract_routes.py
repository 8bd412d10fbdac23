"""Newest network node routes without engines: version prefix, 404/405 shape, state, versions."""

from fastapi.testclient import TestClient


def test_version_prefix_is_stripped(client: TestClient) -> None:
    plain = client.get("/api/v1/state").json()
    versioned = client.get("/v3.0.8/api/v1/state")
    assert versioned.status_code == 200 and versioned.json()["state"] == plain["state"]
    assert client.get("/v3.0.8-rc1/livez").json()["status"] == "ok"
    assert client.get("/v3.0/api/v1/state").status_code == 404


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "/api/v1/nothing/here" in missing.json()["error"]["message"]
    wrong = client.post("/api/v1/state")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


def test_state_and_versions_without_an_engine(client: TestClient) -> None:
    state = client.get("/api/v1/state").json()
    assert state["version"] and state["poc_validation_inference"] is False
    assert state["loaded_model"] is None
    versions = client.get("/api/v1/versions").json()
    assert versions == {
        "version": state["version"],
        "vllm_version": None,
        "poc_validation_inference": False,
    }


def test_gpu_routes_answer_without_a_driver(client: TestClient) -> None:
    devices = client.get("/api/v1/gpu/devices")
    assert devices.status_code == 200 and devices.json()["count"] == len(devices.json()["devices"])
    driver = client.get("/api/v1/gpu/driver")
    assert driver.status_code in (200, 503)
    if driver.status_code == 503:
        assert driver.json()["error"]["code"] == "unavailable"
