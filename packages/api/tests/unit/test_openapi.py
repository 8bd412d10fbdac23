"""/docs documents each service's progress: the schemas in /openapi.json, as clients read them."""

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from mlnode.api.app import create_app
from mlnode.api.testing import make_settings

PROGRESS = {
    "PowServiceStatus": "PowStatus",
    "InferServiceStatus": "InferProgress",
    "TrainStatus": "TrainJobProgress",
    "FuseServiceStatus": "FuseProgress",
}


def progress_ref(schemas: dict[str, Any], status: str) -> str:
    """The model a status schema's `progress` field refers to."""
    options = schemas[status]["properties"]["progress"]["anyOf"]
    (ref,) = [o["$ref"] for o in options if "$ref" in o]
    return str(ref).rsplit("/", 1)[1]


def test_state_and_status_routes_document_each_service_progress(tmp_path: Path) -> None:
    spec = TestClient(create_app(make_settings(tmp_path))).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    services = schemas["NodeStateResponse"]["properties"]["services"]["items"]["anyOf"]
    listed = {ref["$ref"].rsplit("/", 1)[1] for ref in services}
    assert set(PROGRESS) <= listed
    for status, progress in PROGRESS.items():
        assert progress_ref(schemas, status) == progress
    figures = schemas["TrainJobProgress"]["properties"]
    assert {"outer_round", "loss_history", "weights_history", "local_ranks"} <= set(figures)
    assert all("description" in field for field in figures.values())
    train = spec["paths"]["/api/v1/train/status"]["get"]["responses"]["200"]
    assert train["content"]["application/json"]["schema"]["$ref"].endswith("/TrainStatus")
    assert {"tensors_done", "bytes_per_s"} <= set(schemas["FuseProgress"]["properties"])
    assert "requests_in_flight" in schemas["InferProgress"]["properties"]
