"""`GET /api/v1/clock`: the node's time for the ping job, open without the token."""

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from .conftest import make_app


@pytest.mark.parametrize("token", [None, "secret"])
@pytest.mark.parametrize("prefix", ["", "/v3.1.0-vllm-0.28.0"])
def test_clock_answers_204_with_both_stamps(tmp_path: Path, token: str | None, prefix: str) -> None:
    with TestClient(make_app(tmp_path, token=token)) as client:
        before = time.time_ns()
        answer = client.get(f"{prefix}/api/v1/clock")
        after = time.time_ns()
        assert answer.status_code == 204 and answer.content == b""
        received = int(answer.headers["X-Server-Recv-Ns"])
        sent = int(answer.headers["X-Server-Send-Ns"])
        assert before <= received <= sent <= after
        if token is not None:
            assert client.get(f"{prefix}/api/v1/state").status_code == 401
