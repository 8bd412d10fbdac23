"""Fixtures shared by the pow test tiers: the reference vector file and its model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlnode.pow.v1.compute.params import ModelParams
from mlnode.pow.v1.schemas import PowParams

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


POC_DATA_DIR = DATA_DIR / "poc_v2"


@pytest.fixture(scope="session")
def poc_vectors() -> dict[str, Any]:
    """PoC v2 reference vectors (vectors-A.json) for the tiny Qwen3 in tests/data/poc_v2/model."""
    return load_vectors(POC_DATA_DIR / "vectors-A.json")


@pytest.fixture(scope="session")
def poc_model_dir() -> Path:
    """The tiny Qwen3 model the PoC v2 vectors were made with."""
    return POC_DATA_DIR / "model"


@pytest.fixture(scope="session")
def poc_codebook_path() -> Path:
    """The rebuilt, non-consensus test codebook of the decode vectors (tensor `codebook`)."""
    return POC_DATA_DIR / "test-codebook.safetensors"
