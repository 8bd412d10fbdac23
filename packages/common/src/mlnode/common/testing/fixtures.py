"""pytest fixtures of the integration tier, loaded for every package by the root conftest.

    def test_two_nodes(mlnode_factory):
        a, b = mlnode_factory("node-a"), mlnode_factory("node-b", {"MLNODE_LOG_LEVEL": "DEBUG"})

`mlnode_backend` follows `MLNODE_IT_BACKEND`; in container mode without a Docker engine every test
that uses it is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from mlnode.common.testing.backends import (
    BackendSettings,
    BackendUnavailable,
    MLNodeBackend,
    MLNodeHandle,
    open_backend,
)

MLNodeFactory = Callable[..., MLNodeHandle]


@pytest.fixture(scope="session")
def mlnode_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLNodeBackend]:
    """The backend `MLNODE_IT_BACKEND` names (process by default), closed at the session's end."""
    settings = BackendSettings()
    try:
        backend = open_backend(settings.backend, tmp_path_factory.mktemp("mlnodes"), settings)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def mlnode_factory(mlnode_backend: MLNodeBackend) -> Iterator[MLNodeFactory]:
    """`start(name, env=None) -> MLNodeHandle`; nodes started by a test stop when it ends."""
    started: list[MLNodeHandle] = []

    def start(name: str, env: Mapping[str, str] | None = None) -> MLNodeHandle:
        node = mlnode_backend.start(name, env)
        started.append(node)
        return node

    yield start
    for node in started:
        node.terminate()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread during the test (`pytest.mark.usefixtures("one_torch_thread")`).

    Tiny matmuls on several threads only spin-wait at each barrier: on a shared 2-core machine that
    made a decode loop 40x slower (20 s vs 0.5 s) and tiny trainings 4x slower.
    """
    import torch  # here, not at import: every package's tests load this module

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
