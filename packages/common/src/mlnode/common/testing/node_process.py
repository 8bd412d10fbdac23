"""Start a real MLNode server as a subprocess on loopback and wait until it is ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MLNodeProcess:
    """`python -m mlnode.api` in its own process group, state dir and ports.

    Extra settings go in `env` (e.g. `{"MLNODE_API_TOKEN": "t"}`); the Hugging Face cache is a
    directory beside the state dir and the hub is off unless `env` says otherwise. The child's
    output lands in `<state_dir>.log` beside the state dir so a failed start can be explained.
    """

    def __init__(
        self,
        state_dir: Path,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.grpc_port = free_port()
        self.inference_port = free_port()
        self.ready_timeout_s = ready_timeout_s
        self.env = {
            **os.environ,
            "MLNODE_HOST": "127.0.0.1",
            "MLNODE_PORT": str(self.port),
            "MLNODE_GRPC_PORT": str(self.grpc_port),
            "MLNODE_INFER_PORT": str(self.inference_port),
            "MLNODE_STATE_DIR": str(state_dir),
            "PYTHONUNBUFFERED": "1",
            # A test node never reads or fills the user's model cache, nor reaches a model hub.
            "HF_HUB_CACHE": str(state_dir.parent / f"{state_dir.name}-hub"),
            "HF_HUB_OFFLINE": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}.log"

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        """host:port of the tensor transport."""
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> MLNodeProcess:
        """Spawn the server and wait for /readyz (or /livez when a token guards /readyz)."""
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlnode.api"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir.parent,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MLNode exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/livez", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"MLNode not ready in {self.ready_timeout_s} s:\n{self.log()}")

    def wait_for_inference(self, timeout_s: float = 300.0) -> dict[str, Any]:
        """Wait for a started `/inference/up` to run; its first engine instance (`port`, `pid`)."""
        rest = httpx.Client(base_url=f"{self.url}/api/v1", timeout=60)
        deadline = time.monotonic() + timeout_s
        while (phase := rest.get("/inference/up/status").json())["status"] != "running":
            assert phase["status"] not in ("failed", "stopped"), phase
            assert time.monotonic() < deadline, f"engine did not start in {timeout_s} s"
            time.sleep(0.5)
        instance: dict[str, Any] = rest.get("/inference/status").json()["instances"][0]
        return instance

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL of the group after the timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> MLNodeProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.terminate()
