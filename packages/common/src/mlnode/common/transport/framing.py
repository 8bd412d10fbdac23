"""Signed frame streams: tensors to frames, and frames back to tensors only once verified.

A stream is, per tensor, a header (its serialized `TensorHeader`), raw chunks and a trailer
signed over (session, sequence, header bytes, BLAKE3 of the payload); then one `End` frame
signed over (session, count, tag). The reader gives nothing back unless the whole stream checks
out, so tampered, truncated, reordered, duplicated or oversized data never reaches a caller.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import torch
from google.protobuf.message import DecodeError

from mlnode.common.transport import auth
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.codec import (
    CodecError,
    EncodedTensor,
    TensorBuffer,
    WireDType,
    expected_nbytes,
    iter_chunks,
    wire_dtype,
)
from mlnode.common.transport.errors import IntegrityError, LimitExceeded, MalformedFrame
from mlnode.common.transport.hashing import OrderedHash
from mlnode.common.transport.wire import ChunkFrame, FrameLike, WireFrame, chunk_frame

#: Largest chunk any reader accepts, whatever the sender's configuration.
MAX_CHUNK_BYTES = 4 << 20
MAX_NAME_CHARS = 1024


@dataclass(frozen=True)
class Limits:
    """What a reader accepts from a peer."""

    max_tensor_bytes: int
    max_tensors: int
    max_header_bytes: int


def _never_revoked() -> None:
    return None


def _reserve_nothing(nbytes: int) -> None:
    return None


#: Checks a tensor's announced name, dtype and shape before its buffer is allocated.
HeaderCheck = Callable[[str, WireDType, tuple[int, ...]], None]


def _accept_any(name: str, dtype: WireDType, shape: tuple[int, ...]) -> None:
    return None


def write_frames(
    tensors: Iterable[EncodedTensor],
    *,
    session: bytes,
    signer: auth.Identity,
    task: str,
    tag: str,
    chunk_bytes: int,
    alive: Callable[[], None] = _never_revoked,
) -> Iterator[WireFrame]:
    """Frames of a signed stream (chunks already serialized); `alive` raises to stop early."""
    count = 0
    for sequence, tensor in enumerate(tensors):
        header = pb.TensorHeader(
            name=tensor.name,
            dtype=tensor.dtype.name,
            shape=tensor.shape,
            nbytes=tensor.nbytes,
            task=task,
            tag=tag,
            sequence=sequence,
        ).SerializeToString()
        yield pb.Frame(header=header)
        hasher = OrderedHash()
        for piece in iter_chunks(tensor.payload, chunk_bytes):
            alive()
            hasher.update(piece)  # in a worker while gRPC sends the chunk
            yield chunk_frame(piece)
        digest = hasher.digest()
        signature = signer.sign(auth.trailer_message(session, sequence, header, digest))
        yield pb.Frame(trailer=pb.Trailer(digest=digest, signature=signature))
        count += 1
    signature = signer.sign(auth.end_message(session, count, tag))
    yield pb.Frame(end=pb.End(count=count, tag=tag, signature=signature))


class FrameReader:
    """Reads one signed stream from a peer holding `signer_key` within one session."""

    def __init__(
        self,
        *,
        session: bytes,
        signer_key: bytes,
        task: str,
        limits: Limits,
        alive: Callable[[], None] = _never_revoked,
        reserve: Callable[[int], None] = _reserve_nothing,
        check: HeaderCheck = _accept_any,
    ) -> None:
        self.session = session
        self.check = check
        self.signer_key = signer_key
        self.task = task
        self.limits = limits
        self.alive = alive
        self.reserve = reserve
        self._tag: str | None = None

    def read(self, frames: Iterable[FrameLike]) -> tuple[str, dict[str, torch.Tensor]]:
        """(tag, tensors) of a complete, verified stream; IntegrityError or LimitExceeded else."""
        stream = iter(frames)
        tensors: dict[str, torch.Tensor] = {}
        for frame in stream:
            self.alive()
            kind = frame.WhichOneof("kind")
            if kind == "header":
                header = cast(pb.Frame, frame).header
                name, tensor = self._read_tensor(header, len(tensors), stream)
                if name in tensors:
                    raise IntegrityError(f"tensor {name!r} sent twice")
                tensors[name] = tensor
            elif kind == "end":
                tag = self._check_end(cast(pb.Frame, frame).end, len(tensors))
                if next(stream, None) is not None:
                    raise IntegrityError("frames after the end frame")
                return tag, tensors
            else:
                raise IntegrityError(f"unexpected {kind or 'empty'} frame between tensors")
        raise IntegrityError("stream ended before its end frame (truncated)")

    def _check_end(self, end: pb.End, count: int) -> str:
        if end.count != count or (self._tag is not None and end.tag != self._tag):
            raise IntegrityError(f"end frame announces {end.count} tensors, {count} arrived")
        message = auth.end_message(self.session, count, end.tag)
        if not auth.verify(self.signer_key, message, end.signature):
            raise IntegrityError("bad signature on the end frame")
        return end.tag

    def _parse_header(self, raw: bytes, sequence: int) -> pb.TensorHeader:
        if len(raw) > self.limits.max_header_bytes:
            raise LimitExceeded(
                f"tensor header of {len(raw)} bytes is over the limit of "
                f"{self.limits.max_header_bytes} (MLNODE_GRPC_MAX_HEADER_BYTES)"
            )
        if sequence >= self.limits.max_tensors:
            raise LimitExceeded(
                f"more than {self.limits.max_tensors} tensors in one stream "
                "(MLNODE_GRPC_MAX_TENSORS)"
            )
        header = pb.TensorHeader()
        try:
            header.ParseFromString(raw)
        except DecodeError:
            raise IntegrityError("tensor header does not parse") from None
        if header.sequence != sequence or header.task != self.task:
            raise IntegrityError(f"header {sequence} is out of order or names another task")
        if self._tag is None:
            self._tag = header.tag
        if header.tag != self._tag or not 0 < len(header.name) <= MAX_NAME_CHARS:
            raise IntegrityError("header has another tag than the stream, or a bad name")
        return header

    def _open_buffer(self, header: pb.TensorHeader) -> TensorBuffer:
        if header.nbytes > self.limits.max_tensor_bytes:
            raise LimitExceeded(
                f"tensor {header.name!r} of {header.nbytes} bytes is over the limit of "
                f"{self.limits.max_tensor_bytes} (MLNODE_GRPC_MAX_TENSOR_BYTES)"
            )
        try:
            dtype = wire_dtype(header.dtype)
            shape = tuple(header.shape)
            if expected_nbytes(dtype, shape) != header.nbytes:
                raise CodecError(f"shape {shape} of {dtype.name} is not {header.nbytes} bytes")
        except CodecError as exc:
            raise MalformedFrame(f"tensor {header.name!r}: {exc}") from None
        self.check(header.name, dtype, shape)
        self.reserve(header.nbytes)
        return TensorBuffer(dtype, shape, header.nbytes)

    def _read_tensor(
        self, raw_header: bytes, sequence: int, stream: Iterator[FrameLike]
    ) -> tuple[str, torch.Tensor]:
        header = self._parse_header(raw_header, sequence)
        buffer = self._open_buffer(header)
        hasher = OrderedHash()
        for frame in stream:
            self.alive()
            kind = frame.WhichOneof("kind")
            if kind == "trailer":
                trailer = cast(pb.Frame, frame).trailer
                self._check_trailer(trailer, raw_header, sequence, hasher.digest())
                try:
                    return header.name, buffer.finish()
                except CodecError as exc:
                    raise IntegrityError(f"tensor {header.name!r}: {exc}") from None
            if kind != "chunk":
                what = kind or "empty"
                raise IntegrityError(f"unexpected {what} frame in tensor {header.name!r}")
            chunk = cast(pb.Frame | ChunkFrame, frame).chunk
            if len(chunk) > MAX_CHUNK_BYTES:
                raise IntegrityError(f"chunk of {len(chunk)} bytes in tensor {header.name!r}")
            hasher.update(chunk)  # in a worker while the chunk is copied and the next read
            try:
                buffer.write(chunk)
            except CodecError as exc:
                raise IntegrityError(f"tensor {header.name!r}: {exc}") from None
        raise IntegrityError(f"stream ended inside tensor {header.name!r} (truncated)")

    def _check_trailer(
        self, trailer: pb.Trailer, raw_header: bytes, sequence: int, digest: bytes
    ) -> None:
        if not hmac.compare_digest(trailer.digest, digest):
            raise IntegrityError(f"payload digest of tensor {sequence} does not match")
        message = auth.trailer_message(self.session, sequence, raw_header, digest)
        if not auth.verify(self.signer_key, message, trailer.signature):
            raise IntegrityError(f"bad signature on the trailer of tensor {sequence}")
