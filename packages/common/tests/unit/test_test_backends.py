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
