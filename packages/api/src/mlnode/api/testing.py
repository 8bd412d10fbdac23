"""Settings of a node under test, the one way tests of every package build them.

    settings = make_settings(tmp_path, train={"device": "cpu", "torch_threads": 1})

Each part ignores `.env` (a developer's file must not change what a test sees), the state lives
under the test's directory, and the transport listens on a free loopback port.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlnode.api.federation.settings import MetricsSettings
from mlnode.api.models.settings import ModelsSettings
from mlnode.api.settings import MLNodeSettings
from mlnode.common.settings import NodeSettings
from mlnode.common.transport.settings import TransportSettings
from mlnode.fuse.settings import FuseSettings
from mlnode.infer import InferSettings
from mlnode.pow.v1.settings import PowSettings
from mlnode.train.settings import TrainSettings


def make_settings(
    tmp_path: Path,
    *,
    node: Mapping[str, Any] | None = None,
    transport: Mapping[str, Any] | None = None,
    pow: Mapping[str, Any] | None = None,
    fuse: Mapping[str, Any] | None = None,
    infer: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> MLNodeSettings:
    """Every part from its defaults and the given fields; the environment still applies."""
    return MLNodeSettings(
        node=NodeSettings(
            _env_file=None,
            **{"state_dir": tmp_path / "state", **(node or {})},
        ),
        transport=TransportSettings(
            _env_file=None,
            **{"host": "127.0.0.1", "port": 0, **(transport or {})},
        ),
        pow=PowSettings(_env_file=None, **(pow or {})),
        fuse=FuseSettings(_env_file=None, **(fuse or {})),
        infer=InferSettings(_env_file=None, **(infer or {})),
        train=TrainSettings(_env_file=None, **(train or {})),
        models=ModelsSettings(_env_file=None, **{"cache_dir": tmp_path / "hub", **(models or {})}),
        metrics=MetricsSettings(_env_file=None, **(metrics or {})),
    )
