"""A real MLNode process driving fake engines: routes, status codes, proxy, SIGTERM."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlnode.common.testing import wait_until
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.infer.testing.support import FAKE_ENGINE

FAKE_ENV = {
    "MLNODE_INFER_ENGINE_MODULE": FAKE_ENGINE,
    "MLNODE_INFER_GPUS": "[]",
    "MLNODE_INFER_HEALTH_INTERVAL_S": "0.2",
    "MLNODE_INFER_MAX_RESTARTS": "0",
}


def up_body(*args: str) -> dict[str, object]:
    return {"model": "tiny", "dtype": "auto", "additional_args": list(args)}


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def node(tmp_path: Path) -> Iterator[MLNodeProcess]:
    with MLNodeProcess(tmp_path / "node", FAKE_ENV) as started:
        yield started


def api(node: MLNodeProcess) -> httpx.Client:
    return httpx.Client(base_url=f"{node.url}/api/v1", timeout=60)


def inference(node: MLNodeProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{node.inference_port}", timeout=60)


def test_up_proxy_status_and_down(node: MLNodeProcess) -> None:
    with api(node) as rest, inference(node) as proxy:
        assert proxy.get("/health").status_code == 503
        response = rest.post("/inference/up", json=up_body("--chunks", "3"))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "OK"
        assert rest.get("/state").json()["state"] == "INFERENCE"
        assert rest.post("/inference/up", json=up_body()).status_code == 409
        status = rest.get("/inference/status").json()
        assert status["status"] == "running" and status["healthy"]
        pid = status["instances"][0]["pid"]

        assert proxy.get("/health").status_code == 200
        chat = proxy.post("/v1/chat/completions", json={"messages": []})
        assert chat.status_code == 200 and chat.json()["choices"][0]["text"] == "ok"
        with proxy.stream("POST", "/v1/completions", json={"stream": True}) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data:")]
        assert events[-1] == "data: [DONE]" and len(events) == 4

        assert rest.post("/inference/down").json()["status"] == "OK"
        assert gone(pid)
        assert rest.get("/state").json()["state"] == "STOPPED"
        assert proxy.post("/v1/completions", json={}).status_code == 503


def test_refused_args_and_failed_start(node: MLNodeProcess) -> None:
    with api(node) as rest:
        refused = rest.post("/inference/up", json=up_body("--host", "0.0.0.0"))
        assert refused.status_code == 422
        assert "--host" in refused.json()["error"]["message"]

        failed = rest.post("/inference/up", json=up_body("--fail-at-start"))
        assert failed.status_code == 502
        error = failed.json()["error"]
        assert error["code"] == "engine_failed"
        assert "told to fail at start-up" in error["message"]
        assert rest.get("/inference/up/status").json()["status"] == "failed"
        readyz = httpx.get(f"{node.url}/readyz")
        assert readyz.status_code == 503 and "told to fail" in readyz.text

        assert rest.post("/inference/up/async", json=up_body()).status_code == 202
        wait_until(
            lambda: rest.get("/inference/up/status").json()["status"],
            lambda status: status == "running",
            timeout_s=30,
            interval_s=0.1,
        )
        assert httpx.get(f"{node.url}/readyz").status_code == 200


def assert_sigterm_exits_zero_quickly(node: MLNodeProcess, engine_pid: int) -> None:
    """SIGTERM ends the node with code 0 in under 5 s, and its engine with it."""
    started = time.monotonic()
    code = node.terminate(timeout_s=10)
    elapsed = time.monotonic() - started
    assert code == 0, node.log()
    assert elapsed < 5
    assert gone(engine_pid)


def test_sigterm_with_open_stream_exits_zero_and_leaves_no_engine(node: MLNodeProcess) -> None:
    with api(node) as rest:
        slow = up_body("--chunks", "1000", "--chunk-delay", "0.05")
        assert rest.post("/inference/up", json=slow).status_code == 200
        pid = rest.get("/inference/status").json()["instances"][0]["pid"]
    with (
        inference(node) as proxy,
        proxy.stream("POST", "/v1/completions", json={"stream": True}) as stream,
    ):
        next(stream.iter_raw())
        assert_sigterm_exits_zero_quickly(node, pid)


def test_sigterm_during_engine_start_up_exits_zero(node: MLNodeProcess) -> None:
    with api(node) as rest:
        accepted = rest.post("/inference/up/async", json=up_body("--start-delay", "60"))
        assert accepted.status_code == 202
        pid = rest.get("/inference/status").json()["instances"][0]["pid"]
    assert_sigterm_exits_zero_quickly(node, pid)


def test_engines_left_by_a_killed_node_are_reaped_at_the_next_start(tmp_path: Path) -> None:
    first = MLNodeProcess(tmp_path / "node", FAKE_ENV).start()
    try:
        with api(first) as rest:
            assert rest.post("/inference/up", json=up_body()).status_code == 200
            pid = rest.get("/inference/status").json()["instances"][0]["pid"]
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)
        assert not gone(pid)
    finally:
        first.kill()
    try:
        with MLNodeProcess(tmp_path / "node", FAKE_ENV):
            wait_until(lambda: gone(pid), timeout_s=10, interval_s=0.1, what="the orphan's end")
    finally:
        if not gone(pid):
            os.killpg(pid, signal.SIGKILL)
