"""Small checkpoints for tests and benchmarks, written with the safetensors library itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from mlnode.fuse.io.local import INDEX_NAME


def write_checkpoint(
    directory: Path,
    tensors: Mapping[str, torch.Tensor],
    shards: int = 1,
    config: Mapping[str, object] | None = None,
) -> Path:
    """A checkpoint directory: one `model.safetensors`, or `shards` files and an index."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if shards == 1:
        save_file(dict(tensors), str(directory / "model.safetensors"))
    else:
        weight_map = {}
        for i in range(shards):
            part = names[i::shards]
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: tensors[n] for n in part}, str(directory / file))
            weight_map.update(dict.fromkeys(part, file))
        index = {"metadata": {}, "weight_map": weight_map}
        (directory / INDEX_NAME).write_text(json.dumps(index))
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def random_model(
    seed: int, shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Normal random tensors of the given shapes, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(shape, generator=generator).to(dtype) for name, shape in shapes.items()
    }
