"""Fixtures of infer's integration tests: one tiny Llama built per session for every module."""

from pathlib import Path

import pytest

from mlnode.infer.testing.replay_node import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
