from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from .conftest import make_app


def test_malformed_json_is_422_naming_the_field(client: TestClient) -> None:
    answer = client.post("/api/v1/test/pow/start", json={"seconds": "soon"})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["param"] == "seconds" and "seconds" in error["message"]


def test_missing_field_is_422_naming_it(client: TestClient) -> None:
    answer = client.post("/api/v1/test/pow/start", json={})
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "seconds"


def test_broken_json_is_422_not_500(client: TestClient) -> None:
    answer = client.post(
        "/api/v1/test/pow/start",
        content=b'{"seconds": ',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422


def test_post_without_content_type_is_read_as_json(client: TestClient) -> None:
    answer = client.post("/api/v1/test/pow/start", content=b'{"seconds": 30}')
    assert "content-type" not in answer.request.headers
    assert answer.status_code == 200
    assert client.get("/api/v1/state").json()["state"] == "POW"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"]
)
def test_json_body_under_a_generic_content_type_is_read_as_json(
    client: TestClient, content_type: str
) -> None:
    answer = client.post(
        "/api/v1/test/pow/start", content=b'{"seconds": 30}', headers={"content-type": content_type}
    )
    assert answer.status_code == 200


def test_capabilities_describe_the_machine(client: TestClient) -> None:
    body = client.get("/api/v1/capabilities").json()
    assert body["cpu_cores"] >= 1 and body["ram_total_bytes"] > 0 and body["disk_free_bytes"] > 0
    assert body["state"] == "STOPPED" and isinstance(body["gpus"], list)


def test_docs_list_node_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/state", "/api/v1/stop", "/api/v1/capabilities", "/readyz", "/livez"):
        assert path in paths
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/state", "/readyz", "/metrics", "/docs"])
def test_token_guards_every_route_but_livez(tmp_path: Path, path: str) -> None:
    with TestClient(make_app(tmp_path, token="s3cret")) as client:
        assert client.get("/livez").status_code == 200
        refused = client.get(path)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_without_token_setting_no_auth_is_needed(client: TestClient) -> None:
    assert client.get("/api/v1/state").status_code == 200
