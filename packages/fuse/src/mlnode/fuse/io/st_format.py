"""The safetensors file layout, read and written with plain file I/O.

Reading with `pread` instead of a memory map keeps the process's resident set at the tensors in
hand: pages of a mapped file count as resident until unmapped, which would grow with the model.
Writing the header first (from a plan that knows every name, dtype and shape) lets shards be
streamed tensor by tensor. Layout: 8-byte little-endian header length, JSON header, data.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
assert len(DTYPE_NAMES) == len(DTYPES), "safetensors dtype names must map one to one"

#: A header larger than this is refused (a corrupt or hostile file, not a model).
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFormatError(ValueError):
    """A file is not a valid safetensors file."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a safetensors file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def element_count(shape: tuple[int, ...]) -> int:
    """Number of elements of a shape."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def tensor_nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    """Bytes a dense tensor of this dtype and shape takes."""
    return element_count(shape) * torch.empty((), dtype=dtype).element_size()


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a file's header into entries with absolute byte offsets."""
    with path.open("rb") as f:
        size_bytes = f.read(8)
        if len(size_bytes) != 8:
            raise SafetensorsFormatError(f"{path}: too short for a safetensors file")
        (size,) = struct.unpack("<Q", size_bytes)
        # messages never quote the file's bytes: the path may name any file the node can read
        if size > MAX_HEADER_BYTES:
            raise SafetensorsFormatError(f"{path}: not a safetensors file (header length)")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SafetensorsFormatError(f"{path}: not a safetensors file (header)") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError(f"{path}: not a safetensors file (header)")
    data_start = 8 + size
    file_size = path.stat().st_size
    entries = {}
    for index, (name, info) in enumerate(header.items()):
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, index, name, info, data_start, file_size)
    return entries


def _entry(path: Path, index: int, name: str, info: object, start: int, size: int) -> TensorEntry:
    try:
        if not isinstance(info, dict):
            raise TypeError
        dtype = DTYPES[str(info["dtype"])]
        shape = tuple(int(d) for d in info["shape"])
        if len(shape) > 64 or any(d < 0 for d in shape):
            raise ValueError
        begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise SafetensorsFormatError(f"{path}: bad header entry (tensor #{index})") from None
    nbytes = tensor_nbytes(dtype, shape)
    if end - begin != nbytes or begin < 0 or start + end > size:
        raise SafetensorsFormatError(f"{path}: offsets of tensor #{index} do not match its shape")
    return TensorEntry(name, dtype, shape, start + begin, nbytes)


def map_tensor(f: BinaryIO, entry: TensorEntry) -> torch.Tensor:
    """One tensor as a private (copy-on-write) map of its bytes, unmapped when it is freed.

    No copy and no zero-filled pages: the tensor reads the page cache. The file must not shrink
    while the tensor lives (a truncated map faults the process).
    """
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    start = entry.offset - entry.offset % mmap.ALLOCATIONGRANULARITY
    mapped = mmap.mmap(
        f.fileno(), entry.offset + entry.nbytes - start, offset=start, access=mmap.ACCESS_COPY
    )
    buf = torch.frombuffer(
        mapped, dtype=torch.uint8, offset=entry.offset - start, count=entry.nbytes
    )
    return buf.view(entry.dtype).reshape(entry.shape)


def read_tensor(f: BinaryIO, entry: TensorEntry) -> torch.Tensor:
    """Read one tensor from an open file into fresh memory."""
    buf = torch.empty(entry.nbytes, dtype=torch.uint8)
    view = buf.numpy().data
    done = 0
    while done < entry.nbytes:
        got = os.preadv(f.fileno(), [view[done:]], entry.offset + done)
        if got <= 0:
            raise SafetensorsFormatError(f"{f.name}: file ends inside tensor {entry.name!r}")
        done += got
    return buf.view(entry.dtype).reshape(entry.shape)


def build_header(tensors: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> bytes:
    """Length prefix and JSON header for tensors written in this order, padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        nbytes = tensor_nbytes(dtype, shape)
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def write_tensor(f: BinaryIO, tensor: torch.Tensor) -> None:
    """Append a tensor's raw bytes (little-endian, C order)."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    f.write(data.numpy().data)
