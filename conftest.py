"""Root fixtures shared by every package's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Apps built in tests listen for tensors on a free port, never on the fixed default."""
    os.environ.setdefault("MLNODE_GRPC_PORT", "0")


@pytest.fixture(autouse=True, scope="session")
def _reap_children() -> Iterator[None]:
    """Kill any process a test left behind, so one failure cannot leak servers into the next run."""
    yield
    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
