"""One handle on a running MLNode for integration tests, from a local process or a container.

`MLNODE_IT_BACKEND=process` (default) spawns `python -m mlnode.api` on loopback;
`MLNODE_IT_BACKEND=container` starts the image `MLNODE_IT_IMAGE` with testcontainers on a
private Docker network. Tests only see `MLNodeHandle`, so the same test runs on either.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import httpx
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import MLNodeBaseSettings
from mlnode.common.testing.node_process import MLNodeProcess

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

#: Ports the image's defaults listen on inside a container (docker/Dockerfile ENV).
CONTAINER_REST_PORT = 8080
CONTAINER_GRPC_PORT = 50051
CONTAINER_INFER_PORT = 5000


class BackendSettings(MLNodeBaseSettings):
    """Which backend the integration tier uses (`MLNODE_IT_*`)."""

    model_config = SettingsConfigDict(env_prefix="MLNODE_IT_", env_file=None, extra="ignore")

    backend: Literal["process", "container"] = Field(
        default="process", description="process: local subprocesses; container: the MLNode image."
    )
    image: str = Field(default="mlnode:dev-cpu", description="Image the container backend starts.")
    ready_timeout_s: float = Field(
        default=120.0, gt=0, description="Seconds a node gets to answer /livez."
    )


class MLNodeHandle(Protocol):
    """A started MLNode, whatever runs it."""

    name: str

    @property
    def url(self) -> str:
        """REST base URL, reachable from the test process."""
        ...

    @property
    def grpc_address(self) -> str:
        """host:port of the tensor transport, reachable from the test process."""
        ...

    @property
    def inference_url(self) -> str:
        """Base URL of the inference (OpenAI-compatible) port, reachable from the test process."""
        ...

    @property
    def peer_grpc_address(self) -> str:
        """host:port other nodes of the same backend dial (what peers are registered with)."""
        ...

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, wait, return the exit code."""
        ...

    def kill(self) -> None:
        """SIGKILL, no clean-up by the node."""
        ...

    def log(self) -> str:
        """What the node printed so far."""
        ...


class MLNodeBackend(Protocol):
    """Starts nodes; `close` stops whatever it started."""

    kind: str
    #: Host a test-side server (a callback receiver) binds so that nodes reach it.
    bind_host: str
    #: Name of the test machine as the nodes see it.
    host_alias: str

    def start(self, name: str, env: Mapping[str, str] | None = None) -> MLNodeHandle:
        """Start one node and wait until /livez answers."""
        ...

    def close(self) -> None:
        """Stop every node started here."""
        ...


class ProcessNode:
    """`MLNodeHandle` over `MLNodeProcess`."""

    def __init__(self, name: str, proc: MLNodeProcess) -> None:
        self.name = name
        self.proc = proc

    @property
    def url(self) -> str:
        """REST base URL on loopback."""
        return self.proc.url

    @property
    def grpc_address(self) -> str:
        """The tensor transport address on loopback."""
        return self.proc.grpc_address

    @property
    def inference_url(self) -> str:
        """Inference base URL on loopback."""
        return f"http://127.0.0.1:{self.proc.inference_port}"

    @property
    def peer_grpc_address(self) -> str:
        """Same as `grpc_address`: every process shares loopback."""
        return self.proc.grpc_address

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM the server and return its exit code."""
        return self.proc.terminate(timeout_s)

    def kill(self) -> None:
        """SIGKILL the server's process group."""
        self.proc.kill()

    def log(self) -> str:
        """The server's log file."""
        return self.proc.log()


class ProcessBackend:
    """Local `python -m mlnode.api` processes, each with its own state dir under `workdir`."""

    kind = "process"
    bind_host = "127.0.0.1"
    host_alias = "127.0.0.1"

    def __init__(self, workdir: Path, ready_timeout_s: float = 60.0) -> None:
        self.workdir = workdir
        self.ready_timeout_s = ready_timeout_s
        self.nodes: list[ProcessNode] = []

    def start(self, name: str, env: Mapping[str, str] | None = None) -> ProcessNode:
        """Spawn the node and wait for /livez."""
        proc = MLNodeProcess(self.workdir / name, dict(env or {}), self.ready_timeout_s)
        node = ProcessNode(name, proc.start())
        self.nodes.append(node)
        return node

    def close(self) -> None:
        """Terminate every node still running."""
        for node in self.nodes:
            node.terminate()
        self.nodes.clear()


def docker_unavailable_reason() -> str | None:
    """Why containers cannot run here, or None when a Docker engine answers."""
    try:
        from docker.client import DockerClient
    except ImportError:
        return "the 'docker' and 'testcontainers' packages are not installed (requirements-dev)"
    try:
        client = DockerClient.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "no engine", with its reason
        return f"no Docker engine is reachable ({type(exc).__name__}: {exc})"
    return None


class ContainerNode:
    """`MLNodeHandle` over a testcontainers container of the MLNode image."""

    def __init__(self, name: str, container: DockerContainer) -> None:
        self.name = name
        self.container = container
        self._host = container.get_container_host_ip()
        self._rest = container.get_exposed_port(CONTAINER_REST_PORT)
        self._grpc = container.get_exposed_port(CONTAINER_GRPC_PORT)
        self._infer = container.get_exposed_port(CONTAINER_INFER_PORT)

    @property
    def url(self) -> str:
        """REST base URL through the published port."""
        return f"http://{self._host}:{self._rest}"

    @property
    def grpc_address(self) -> str:
        """The tensor transport address through the published port."""
        return f"{self._host}:{self._grpc}"

    @property
    def inference_url(self) -> str:
        """Inference base URL through the published port."""
        return f"http://{self._host}:{self._infer}"

    @property
    def peer_grpc_address(self) -> str:
        """The container's network alias: what the other containers dial."""
        return f"{self.name}:{CONTAINER_GRPC_PORT}"

    def terminate(self, timeout_s: float = 10.0) -> int:
        """`docker stop` (SIGTERM, SIGKILL after the timeout) and the exit code."""
        wrapped = self.container.get_wrapped_container()
        wrapped.stop(timeout=int(timeout_s))
        status: int = wrapped.wait(timeout=timeout_s + 10)["StatusCode"]
        return status

    def kill(self) -> None:
        """`docker kill`."""
        self.container.get_wrapped_container().kill()

    def log(self) -> str:
        """The container's stdout and stderr."""
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")


class ContainerBackend:
    """Containers of the MLNode image on one private network; nodes know each other by name."""

    kind = "container"
    bind_host = "0.0.0.0"  # the containers reach the test process via the gateway
    host_alias = "host.docker.internal"

    def __init__(self, image: str, ready_timeout_s: float = 120.0) -> None:
        from testcontainers.core.network import Network

        self.image = image
        self.ready_timeout_s = ready_timeout_s
        self.network: Network = Network().create()
        self.nodes: list[ContainerNode] = []

    def start(self, name: str, env: Mapping[str, str] | None = None) -> ContainerNode:
        """Start a container named `name` on the network and wait for /livez."""
        from testcontainers.core.container import DockerContainer

        container = (
            DockerContainer(self.image)
            # Test containers publish on the test host only; a node without a token refuses a
            # public bind unless told so.
            .with_envs(**{"MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC": "1", **dict(env or {})})
            .with_exposed_ports(CONTAINER_REST_PORT, CONTAINER_GRPC_PORT, CONTAINER_INFER_PORT)
            .with_network(self.network)
            .with_network_aliases(name)
            .with_kwargs(extra_hosts={self.host_alias: "host-gateway"})
        )
        container.start()
        node = ContainerNode(name, container)
        self.nodes.append(node)
        _wait_live(node, self.ready_timeout_s)
        return node

    def close(self) -> None:
        """Remove every container, then the network."""
        for node in self.nodes:
            node.container.stop()
        self.nodes.clear()
        self.network.remove()


def _wait_live(node: MLNodeHandle, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{node.url}/livez", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{node.name} not live after {timeout_s:.0f} s:\n{node.log()}")


class BackendUnavailable(RuntimeError):
    """The configured backend cannot run on this machine; the message says why."""


def open_backend(
    kind: str, workdir: Path, settings: BackendSettings | None = None
) -> MLNodeBackend:
    """A `MLNodeBackend` of that kind; `BackendUnavailable` when containers cannot run here."""
    settings = settings or BackendSettings()
    if kind == "process":
        return ProcessBackend(workdir, settings.ready_timeout_s)
    if kind == "container":
        reason = docker_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"MLNODE_IT_BACKEND=container, but {reason}")
        return ContainerBackend(settings.image, settings.ready_timeout_s)
    raise ValueError(f"unknown MLNode test backend {kind!r} (process or container)")
