import os
import stat
import time
from pathlib import Path

import httpx
import psutil

from mlnode.common.testing import MLNodeProcess, wait_until


def readyz(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return None


def wait_ready(url: str, timeout_s: float = 30.0) -> httpx.Response:
    answer = wait_until(
        lambda: readyz(url),
        lambda a: a is not None and a.status_code == 200,
        timeout_s=timeout_s,
        interval_s=0.1,
        what="/readyz 200",
    )
    assert answer is not None
    return answer


def test_server_serves_routes_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    node = MLNodeProcess(tmp_path / "node").start()
    try:
        assert wait_ready(node.url).json()["status"] == "ok"
        assert httpx.get(f"{node.url}/api/v1/state").json()["state"] == "STOPPED"
        assert httpx.post(f"{node.url}/api/v1/stop", content=b"").json() == {"status": "OK"}
        assert "mlnode_node_state" in httpx.get(f"{node.url}/metrics").text
        paths = httpx.get(f"{node.url}/openapi.json").json()["paths"]
        assert "/api/v1/state" in paths and "/api/v1/capabilities" in paths
        assert node.proc is not None
        pgid = os.getpgid(node.proc.pid)
        family = [
            node.proc.pid,
            *(c.pid for c in psutil.Process(node.proc.pid).children(recursive=True)),
        ]
    finally:
        started = time.monotonic()
        code = node.terminate(timeout_s=5)
    assert code == 0, node.log()
    assert time.monotonic() - started < 5
    assert "Application shutdown complete" in node.log()
    assert not [
        pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    try:
        os.killpg(pgid, 0)
        leftover = True
    except ProcessLookupError:
        leftover = False
    assert not leftover, "a process of the server's group survived"


def test_token_is_enforced_by_the_real_server(tmp_path: Path) -> None:
    with MLNodeProcess(tmp_path / "node", env={"MLNODE_API_TOKEN": "tok"}) as node:
        assert httpx.get(f"{node.url}/livez").status_code == 200
        assert httpx.get(f"{node.url}/api/v1/state").status_code == 401
        ok = httpx.get(f"{node.url}/api/v1/state", headers={"Authorization": "Bearer tok"})
        assert ok.status_code == 200 and ok.json()["state"] == "STOPPED"


def test_state_dir_comes_from_environment(tmp_path: Path) -> None:
    with MLNodeProcess(tmp_path / "custom-state") as node:
        assert wait_ready(node.url).status_code == 200
    assert (tmp_path / "custom-state").is_dir()
    assert (tmp_path / "custom-state").stat().st_mode & 0o777 == 0o700


def test_public_bind_generates_a_token_file_on_first_start(tmp_path: Path) -> None:
    env = {"MLNODE_HOST": "0.0.0.0", "MLNODE_API_TOKEN_FILE": "api-token"}
    with MLNodeProcess(tmp_path / "node", env=env) as node:
        token_file = tmp_path / "node" / "api-token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert httpx.get(f"{node.url}/api/v1/state").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{node.url}/api/v1/state", headers=auth).status_code == 200
    log = node.log_path.read_text()
    assert str(token_file) in log and token not in log
