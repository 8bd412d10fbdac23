"""Fixtures shared by the pow test tiers: the reference vector file and its model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlnode.pow.compute.params import ModelParams
from mlnode.pow.schemas import PowParams

DATA_DIR = Path(__file__).parent / "data"
VECTOR_FILES = sorted(DATA_DIR.glob("gonka-v1-*.json"))


def load_vectors(path: Path) -> dict[str, Any]:
    """One reference vector file."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session", params=VECTOR_FILES, ids=lambda p: p.stem)
def vectors(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each reference vector file in tests/data."""
    return load_vectors(request.param)


@pytest.fixture(scope="session")
def vector_params(vectors: dict[str, Any]) -> ModelParams:
    """The model params of a vector file."""
    return PowParams(**vectors["params"]).to_model_params()
