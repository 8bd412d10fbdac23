"""Tensors to and from raw little-endian bytes: the dtype registry, encoding and bounded decoding.

Pure: no grpc and no signatures. A tensor travels as its dtype name, shape and C-order bytes;
bfloat16 is carried as its 16-bit patterns, so it round-trips bit-exactly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mlnode.common.transport.api import TensorLike

if sys.byteorder != "little":  # the wire is little-endian and we reinterpret memory in place
    raise ImportError("the tensor codec needs a little-endian host")


@dataclass(frozen=True)
class WireDType:
    """One dtype the wire carries: its name, torch and numpy counterparts and item size."""

    name: str
    torch_dtype: torch.dtype
    numpy_dtype: np.dtype[np.generic] | None
    itemsize: int


def _entry(name: str, torch_dtype: torch.dtype, numpy_name: str | None) -> WireDType:
    numpy_dtype = np.dtype(numpy_name) if numpy_name is not None else None
    return WireDType(name, torch_dtype, numpy_dtype, torch.empty((), dtype=torch_dtype).itemsize)


#: Every dtype of the wire format (DESIGN §5), by wire name.
DTYPES: dict[str, WireDType] = {
    d.name: d
    for d in (
        _entry("float32", torch.float32, "float32"),
        _entry("float16", torch.float16, "float16"),
        _entry("bfloat16", torch.bfloat16, None),
        _entry("int8", torch.int8, "int8"),
        _entry("uint8", torch.uint8, "uint8"),
        _entry("int32", torch.int32, "int32"),
        _entry("int64", torch.int64, "int64"),
        _entry("bool", torch.bool, "bool"),
    )
}
_BY_TORCH = {d.torch_dtype: d for d in DTYPES.values()}
_BY_NUMPY = {d.numpy_dtype: d for d in DTYPES.values() if d.numpy_dtype is not None}

assert set(DTYPES) == {
    "float32",
    "float16",
    "bfloat16",
    "int8",
    "uint8",
    "int32",
    "int64",
    "bool",
}, "the wire dtype registry must list exactly the dtypes of DESIGN §5"
assert len(_BY_TORCH) == len(DTYPES), "each wire dtype needs its own torch dtype"

MAX_RANK = 32
#: Largest element count of any shape (torch indexes with int64; zero-size shapes included).
MAX_ELEMENTS = 1 << 60


class CodecError(ValueError):
    """A tensor cannot be encoded, or bytes do not form the announced tensor."""


def wire_dtype(name: str) -> WireDType:
    """The registry entry for a wire name; CodecError for anything else."""
    try:
        return DTYPES[name]
    except KeyError:
        raise CodecError(f"dtype {name!r} is not one of {sorted(DTYPES)}") from None


def wire_dtype_of_torch(dtype: torch.dtype) -> WireDType:
    """The registry entry of a torch dtype; CodecError when the wire cannot carry it."""
    try:
        return _BY_TORCH[dtype]
    except KeyError:
        raise CodecError(f"dtype {dtype} cannot be sent; use one of {sorted(DTYPES)}") from None


@dataclass(frozen=True)
class EncodedTensor:
    """A tensor ready to send: dtype, shape and a flat byte view of its memory."""

    name: str
    dtype: WireDType
    shape: tuple[int, ...]
    payload: memoryview

    @property
    def nbytes(self) -> int:
        """Length of the payload in bytes."""
        return self.payload.nbytes


def _torch_bytes(tensor: torch.Tensor) -> tuple[WireDType, tuple[int, ...], memoryview]:
    dtype = wire_dtype_of_torch(tensor.dtype)
    host = tensor.detach()
    if host.device.type != "cpu":  # CUDA and other devices are staged through host memory
        host = host.to("cpu")
    host = host.contiguous().reshape(-1)
    flat = host.view(torch.uint8) if host.numel() else torch.empty(0, dtype=torch.uint8)
    return dtype, tuple(tensor.shape), flat.numpy().data.cast("B")


def _numpy_bytes(array: np.ndarray) -> tuple[WireDType, tuple[int, ...], memoryview]:
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype
    dtype = _BY_NUMPY.get(np.dtype(native))
    if dtype is None:
        raise CodecError(f"dtype {array.dtype} cannot be sent; use one of {sorted(DTYPES)}")
    host = np.ascontiguousarray(array, dtype=dtype.numpy_dtype).reshape(-1)
    return dtype, tuple(array.shape), host.view(np.uint8).data


def check_sendable(name: str, tensor: TensorLike) -> None:
    """CodecError unless `encode` can carry this tensor; copies nothing (no device transfer)."""
    if isinstance(tensor, torch.Tensor):
        wire_dtype_of_torch(tensor.dtype)
    elif isinstance(tensor, np.ndarray):
        native = tensor.dtype.newbyteorder("=") if tensor.dtype.byteorder == ">" else tensor.dtype
        if np.dtype(native) not in _BY_NUMPY:
            raise CodecError(f"dtype {tensor.dtype} cannot be sent; use one of {sorted(DTYPES)}")
    else:
        raise CodecError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(tensor)}")
    if tensor.ndim > MAX_RANK:
        raise CodecError(f"{name}: rank {tensor.ndim} is over {MAX_RANK}")


def encode(name: str, tensor: TensorLike) -> EncodedTensor:
    """A torch tensor or numpy array as wire bytes (no copy for contiguous host tensors)."""
    if isinstance(tensor, torch.Tensor):
        dtype, shape, payload = _torch_bytes(tensor)
    elif isinstance(tensor, np.ndarray):
        dtype, shape, payload = _numpy_bytes(tensor)
    else:
        raise CodecError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(tensor)}")
    if len(shape) > MAX_RANK:
        raise CodecError(f"{name}: rank {len(shape)} is over {MAX_RANK}")
    return EncodedTensor(name, dtype, shape, payload)


def iter_chunks(payload: memoryview, chunk_bytes: int) -> Iterator[memoryview]:
    """Consecutive views of at most `chunk_bytes` bytes (none for an empty payload)."""
    for start in range(0, payload.nbytes, chunk_bytes):
        yield payload[start : start + chunk_bytes]


def expected_nbytes(dtype: WireDType, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of this dtype and shape; CodecError for a bad shape."""
    if len(shape) > MAX_RANK:
        raise CodecError(f"rank {len(shape)} is over {MAX_RANK}")
    if any(dim < 0 for dim in shape):
        raise CodecError(f"negative dimension in shape {shape}")
    if math.prod(max(dim, 1) for dim in shape) > MAX_ELEMENTS:
        raise CodecError(f"shape {shape} is out of range")
    return math.prod(shape) * dtype.itemsize


class TensorBuffer:
    """Receives one tensor's bytes into memory allocated once, then reinterprets them."""

    def __init__(self, dtype: WireDType, shape: tuple[int, ...], nbytes: int) -> None:
        if expected_nbytes(dtype, shape) != nbytes:
            raise CodecError(f"{nbytes} bytes do not hold a {dtype.name} tensor of shape {shape}")
        self.dtype = dtype
        self.shape = shape
        self._data = torch.empty(nbytes, dtype=torch.uint8)
        self._view = self._data.numpy()
        self._filled = 0

    @property
    def filled(self) -> int:
        """Bytes written so far."""
        return self._filled

    def write(self, chunk: bytes | memoryview) -> None:
        """Append a chunk; CodecError when it would overflow the announced length."""
        end = self._filled + memoryview(chunk).nbytes
        if end > self._view.nbytes:
            raise CodecError(f"payload longer than the announced {self._view.nbytes} bytes")
        self._view[self._filled : end] = np.frombuffer(chunk, dtype=np.uint8)
        self._filled = end

    def finish(self) -> torch.Tensor:
        """The tensor, once every announced byte arrived."""
        if self._filled != self._view.nbytes:
            raise CodecError(f"payload has {self._filled} of {self._view.nbytes} bytes")
        if self.dtype.torch_dtype is torch.bool and self._view.size and self._view.max() > 1:
            raise CodecError("bool payload holds bytes other than 0 and 1")
        try:
            if not self._data.numel():
                return torch.empty(self.shape, dtype=self.dtype.torch_dtype)
            return self._data.view(self.dtype.torch_dtype).reshape(self.shape)
        except RuntimeError as exc:  # shapes torch cannot lay out
            raise CodecError(f"shape {self.shape}: {exc}") from None
