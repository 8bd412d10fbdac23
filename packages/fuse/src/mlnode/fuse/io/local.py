"""Local safetensors checkpoints: one file, or shards listed by an index."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import BinaryIO

import torch

from mlnode.common.transport.api import TensorMeta
from mlnode.fuse.io.st_format import (
    SafetensorsFormatError,
    TensorEntry,
    map_tensor,
    read_header,
    read_tensor,
)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class SourceNotFound(FileNotFoundError):
    """A checkpoint path holds no safetensors model."""


def checkpoint_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint (a file, or a directory with an index or one file)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceNotFound(f"{path}: no such file or directory")
    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SafetensorsFormatError(f"{index}: not a safetensors index ({exc})") from exc
        files = [path / name for name in dict.fromkeys(weight_map.values())]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SourceNotFound(f"{index} names missing shards: {', '.join(missing)}")
        return files
    singles = sorted(path.glob("*.safetensors"))
    if len(singles) != 1:
        raise SourceNotFound(f"{path}: expected {INDEX_NAME} or exactly one .safetensors file")
    return singles


class LocalSafetensors:
    """A checkpoint on this machine; every `get` reads just that tensor from disk.

    `mapped` reads map each tensor's bytes (faster, no copy); otherwise they are copied with
    `pread`, which also survives a file that shrinks mid-read (an error instead of a fault).
    """

    def __init__(self, path: Path, mapped: bool = False) -> None:
        self.path = path
        self.mapped = mapped
        self._entries: dict[str, tuple[Path, TensorEntry]] = {}
        for file in checkpoint_files(path):
            for name, entry in read_header(file).items():
                if name in self._entries:
                    raise SafetensorsFormatError(f"{path}: tensor {name!r} is in two shards")
                self._entries[name] = (file, entry)
        self._files: dict[Path, BinaryIO] = {}
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        """The checkpoint's path."""
        return str(self.path)

    def has(self, name: str) -> bool:
        """Whether the checkpoint holds a tensor of this name."""
        return name in self._entries

    def describe(self) -> dict[str, TensorMeta]:
        """Names, dtypes and shapes from the headers."""
        return {
            name: TensorMeta(name, entry.dtype, entry.shape)
            for name, (_, entry) in self._entries.items()
        }

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor; safe from several threads (reads are positional)."""
        file, entry = self._entries[name]
        with self._lock:
            handle = self._files.get(file)
            if handle is None:
                handle = self._files[file] = file.open("rb")
        return (map_tensor if self.mapped else read_tensor)(handle, entry)

    def close(self) -> None:
        """Close the shard files."""
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()
