"""Checkpoints as safetensors plus JSON, never pickle.

A checkpoint is a directory `round-NNNNNN/` holding `model.safetensors` and `config.json` (a
loadable Hugging Face model), `outer.safetensors` (outer momentum, int8 error-feedback residuals),
`inner_optimizer.safetensors` (AdamW moments) and `state.json` (round, inner step, loss history,
weight hash). It is written to a temporary directory and renamed: a crash leaves no half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from mlnode.train.diloco.math import Tensors

PREFIX = "round-"
MOMENTUM = "momentum/"
RESIDUAL = "residual/"


@dataclass
class Checkpoint:
    """Everything a worker needs to resume."""

    round: int
    inner_step: int
    params: Tensors
    momentum: Tensors
    residuals: Tensors
    optimizer: Tensors
    meta: dict[str, Any] = field(default_factory=dict)


def _save(tensors: Tensors, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def save_checkpoint(
    root: Path, checkpoint: Checkpoint, model_config: dict[str, Any], keep: int
) -> Path:
    """Write a checkpoint under `root`, then keep only the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{checkpoint.round:06d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save(checkpoint.params, tmp / "model.safetensors")
    outer = {MOMENTUM + k: v for k, v in checkpoint.momentum.items()}
    outer |= {RESIDUAL + k: v for k, v in checkpoint.residuals.items()}
    _save(outer, tmp / "outer.safetensors")
    _save(checkpoint.optimizer, tmp / "inner_optimizer.safetensors")
    (tmp / "config.json").write_text(json.dumps(model_config, indent=2, default=str))
    state = {"round": checkpoint.round, "inner_step": checkpoint.inner_step, **checkpoint.meta}
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint directory."""
    state = json.loads((path / "state.json").read_text())
    outer = load_file(str(path / "outer.safetensors"))
    return Checkpoint(
        round=int(state.pop("round")),
        inner_step=int(state.pop("inner_step")),
        params=load_file(str(path / "model.safetensors")),
        momentum={k[len(MOMENTUM) :]: v for k, v in outer.items() if k.startswith(MOMENTUM)},
        residuals={k[len(RESIDUAL) :]: v for k, v in outer.items() if k.startswith(RESIDUAL)},
        optimizer=load_file(str(path / "inner_optimizer.safetensors")),
        meta=state,
    )


def load_latest(root: Path) -> Checkpoint | None:
    """The newest checkpoint under `root`, if any."""
    found = list_checkpoints(root)
    return load_checkpoint(found[-1]) if found else None
