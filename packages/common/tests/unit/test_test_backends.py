import pytest
from pydantic import ValidationError

from mlnode.common.testing.backends import (
    BackendSettings,
    BackendUnavailable,
    ProcessBackend,
    docker_unavailable_reason,
    open_backend,
)


def test_process_is_the_default_backend(monkeypatch, tmp_path):
    monkeypatch.delenv("MLNODE_IT_BACKEND", raising=False)
    settings = BackendSettings()
    assert settings.backend == "process"
    assert isinstance(open_backend(settings.backend, tmp_path, settings), ProcessBackend)


def test_unknown_backend_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("MLNODE_IT_BACKEND", "vm")
    with pytest.raises(ValidationError):
        BackendSettings()
    monkeypatch.delenv("MLNODE_IT_BACKEND")
    with pytest.raises(ValueError, match="unknown MLNode test backend 'vm'"):
        open_backend("vm", tmp_path)


def test_container_mode_without_an_engine_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    reason = docker_unavailable_reason()
    assert reason is not None and "no Docker engine is reachable" in reason
    with pytest.raises(BackendUnavailable, match="MLNODE_IT_BACKEND=container, but no Docker"):
        open_backend("container", tmp_path)


class FakeWrapped:
    def __init__(self):
        self.calls = []

    def stop(self, timeout):
        self.calls.append(("stop", timeout))

    def wait(self, timeout):
        self.calls.append(("wait", timeout))
        return {"StatusCode": 143}

    def kill(self):
        self.calls.append(("kill",))


class FakeContainer:
    """The testcontainers side of ContainerNode: published ports and the docker-py container."""

    def __init__(self):
        self.wrapped = FakeWrapped()

    def get_container_host_ip(self):
        return "10.0.0.5"

    def get_exposed_port(self, port):
        return {8080: 32768, 50051: 32769, 5000: 32770}[port]

    def get_wrapped_container(self):
        return self.wrapped

    def get_logs(self):
        return b"out\n", b"err\n"


def test_container_handle_maps_published_ports_and_peer_addresses():
    from mlnode.common.testing.backends import ContainerNode

    container = FakeContainer()
    node = ContainerNode("node2", container)  # type: ignore[arg-type]  # the handle uses 4 methods
    assert node.url == "http://10.0.0.5:32768"
    assert node.grpc_address == "10.0.0.5:32769"
    assert node.inference_url == "http://10.0.0.5:32770"
    assert node.peer_grpc_address == "node2:50051"  # other containers dial the network alias
    assert node.terminate(timeout_s=3) == 143
    node.kill()
    assert container.wrapped.calls == [("stop", 3), ("wait", 13), ("kill",)]
    assert node.log() == "out\nerr\n"
