"""Sharded safetensors output in the Hugging Face layout, written aside and renamed when done."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import torch

from mlnode.fuse.io.local import INDEX_NAME, SINGLE_NAME
from mlnode.fuse.io.st_format import build_header, tensor_nbytes, write_tensor

#: Files besides the weights that make a checkpoint loadable; copied from the reference source.
COMPANION_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "preprocessor_config.json",
)

OutputSpec = tuple[str, torch.dtype, tuple[int, ...]]


def assign_shards(specs: Sequence[OutputSpec], max_shard_size: int) -> list[list[OutputSpec]]:
    """Split tensors, in order, into shards of at most `max_shard_size` bytes.

    A tensor larger than `max_shard_size` gets a shard of its own.
    """
    shards: list[list[OutputSpec]] = [[]]
    size = 0
    for spec in specs:
        nbytes = tensor_nbytes(spec[1], spec[2])
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """`model.safetensors`, or `model-0000i-of-0000n.safetensors` for several shards."""
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


class ShardedWriter:
    """Streams tensors, in plan order, into shards under a hidden staging directory.

    `commit` writes the index and companion files and renames the staging directory onto the
    output path; until then the output path does not exist, so a failed or stopped fusion never
    leaves something that looks complete. `abort` removes the staging directory.
    """

    def __init__(self, output: Path, specs: Sequence[OutputSpec], max_shard_size: int) -> None:
        if output.exists():
            raise FileExistsError(f"{output} exists; fusion does not overwrite")
        self.output = output
        self.staging = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
        self._shards = assign_shards(specs, max_shard_size)
        self._names = shard_names(len(self._shards))
        self._queue = [(i, spec) for i, shard in enumerate(self._shards) for spec in shard]
        self._next = 0
        self._file: BinaryIO | None = None
        self._shard = -1
        output.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        self.bytes_written = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor of the plan; its name, dtype and shape must match the plan."""
        shard, (want, dtype, shape) = self._queue[self._next]
        if name != want or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(
                f"writer expected {want} {dtype} {shape}, got {name} {tensor.dtype} "
                f"{tuple(tensor.shape)}"
            )
        if shard != self._shard:
            self._open_shard(shard)
        assert self._file is not None
        write_tensor(self._file, tensor)
        self.bytes_written += tensor_nbytes(dtype, shape)
        self._next += 1

    def _open_shard(self, shard: int) -> None:
        if self._file is not None:
            self._file.close()
        self._file = (self.staging / self._names[shard]).open("wb")
        self._file.write(build_header(self._shards[shard]))
        self._shard = shard

    def commit(self, companions_from: Path | None = None) -> Path:
        """Finish the checkpoint and move it onto the output path."""
        if self._next != len(self._queue):
            raise RuntimeError(f"commit after {self._next} of {len(self._queue)} tensors")
        if self._file is not None:
            self._file.close()
            self._file = None
        if len(self._shards) > 1:
            self._write_index()
        if companions_from is not None:
            copy_companions(companions_from, self.staging)
        self.staging.rename(self.output)
        return self.output

    def _write_index(self) -> None:
        weight_map = {
            spec[0]: self._names[i] for i, shard in enumerate(self._shards) for spec in shard
        }
        total = sum(tensor_nbytes(dtype, shape) for _, dtype, shape in self._queue_specs())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (self.staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    def _queue_specs(self) -> list[OutputSpec]:
        return [spec for _, spec in self._queue]

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        shutil.rmtree(self.staging, ignore_errors=True)


def copy_companions(source_dir: Path, target_dir: Path) -> list[str]:
    """Copy config and tokenizer files of a checkpoint directory; returns the names copied."""
    if not source_dir.is_dir():
        return []
    copied = []
    for pattern in COMPANION_PATTERNS:
        for path in sorted(source_dir.glob(pattern)):
            if path.is_file() and not (target_dir / path.name).exists():
                shutil.copy2(path, target_dir / path.name)
                copied.append(path.name)
    return copied
