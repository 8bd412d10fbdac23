"""The package surface other packages import: every name resolves, and none loads before use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlnode.infer
from mlnode.infer.args import EngineArgs
from mlnode.infer.service import InferService


def test_every_surface_name_resolves_to_its_home() -> None:
    for name in mlnode.infer.__all__:
        assert getattr(mlnode.infer, name) is not None
    assert mlnode.infer.InferService is InferService
    assert mlnode.infer.EngineArgs is EngineArgs


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = mlnode.infer.no_such_name  # type: ignore[attr-defined]


def test_importing_the_package_loads_none_of_the_node_side() -> None:
    # The engine processes import the package for the forcing plugin; a fresh interpreter shows
    # what that costs them.
    probe = (
        "import sys, mlnode.infer, mlnode.infer.forcing.plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette') "
        "or m in ('mlnode.infer.service', 'mlnode.infer.proxy', 'mlnode.infer.routes')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
