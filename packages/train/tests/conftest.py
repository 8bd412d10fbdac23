"""Fixtures shared by mlnode-train's test tiers: a tiny corpus and tiny training requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlnode.train.testing import TINY_LLAMA, mesh_body, write_tiny_corpus


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Tiny models on a shared 2-core machine: every train test runs on one intra-op thread."""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path / "corpus.txt")


@pytest.fixture
def make_request(corpus: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A JSON body for POST /train/start; keyword arguments override top-level fields."""

    def make(rank: int = 0, world_size: int = 1, **overrides: Any) -> dict[str, Any]:
        body = mesh_body(
            "task-1",
            rank,
            world_size,
            TINY_LLAMA,
            corpus,
            32,
            diloco={"inner_steps": 5, "round_timeout_s": 20, "chunk_timeout_s": 10},
            optim={
                "lr": 3e-3,
                "total_steps": 20,
                "batch_size": 8,
                "micro_batch_size": 4,
                "weight_decay": 0.0,
            },
            checkpoint={"dir": str(tmp_path / f"ckpt-{rank}"), "every_outer_steps": 1},
            seed=7,
        )
        body.update(overrides)
        return body

    return make
