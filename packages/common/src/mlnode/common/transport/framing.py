"""Signed frame streams: tensors to frames, and frames back to tensors only once verified.

A stream is, per tensor, a header (its serialized `TensorHeader`), raw chunks and a trailer
signed over (session, sequence, header bytes, BLAKE3 of the payload); then one `End` frame
signed over (session, count, tag). Small tensors may instead travel several to a `Bundle` frame:
their headers, their payloads end to end and one signature over (session, first sequence,
headers, BLAKE3 of the payload). The reader gives nothing back unless the whole stream checks
out, so tampered, truncated, reordered, duplicated or oversized data never reaches a caller.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import torch
from blake3 import blake3
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
from mlnode.common.transport.wire import (
    BundleFrame,
    BundleView,
    ChunkFrame,
    FrameLike,
    WireFrame,
    bundle_frame,
    chunk_frame,
)

#: Largest chunk any reader accepts, whatever the sender's configuration.
MAX_CHUNK_BYTES = 4 << 20
MAX_NAME_CHARS = 1024
#: Tensors up to this size are bundled when a writer bundles (`write_frames(bundle=True)`).
BUNDLE_TENSOR_BYTES = 256 << 10
#: Header bytes of one bundle, so that a bundle frame fits gRPC's message limit.
BUNDLE_HEADER_BYTES = 32 << 10


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
    bundle: bool = False,
) -> Iterator[WireFrame]:
    """Frames of a signed stream (chunks already serialized); `alive` raises to stop early.

    `bundle`: tensors of at most `BUNDLE_TENSOR_BYTES` go several to a `Bundle` frame of at
    most `chunk_bytes` of payload (one signature for all of them).
    """
    count = 0
    pending: list[tuple[bytes, memoryview]] = []
    pending_bytes = pending_header_bytes = 0

    def flush() -> bytes:
        nonlocal pending_bytes, pending_header_bytes
        first = count - len(pending)
        headers = [h for h, _ in pending]
        payloads = [p for _, p in pending]
        hasher = blake3()
        for payload in payloads:
            hasher.update(payload)
        digest = bytes(hasher.digest())
        message = auth.bundle_message(session, first, headers, digest)
        frame = bundle_frame(headers, payloads, digest, signer.sign(message))
        pending.clear()
        pending_bytes = pending_header_bytes = 0
        return frame

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
        small = bundle and tensor.nbytes <= min(BUNDLE_TENSOR_BYTES, chunk_bytes)
        full = (
            pending_bytes + tensor.nbytes > chunk_bytes
            or pending_header_bytes + len(header) > BUNDLE_HEADER_BYTES
        )
        if pending and (not small or full):
            yield flush()
        if small:
            alive()
            pending.append((header, tensor.payload))
            pending_bytes += tensor.nbytes
            pending_header_bytes += len(header)
            count += 1
            continue
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
    if pending:
        yield flush()
    signature = signer.sign(auth.end_message(session, count, tag))
    yield pb.Frame(end=pb.End(count=count, tag=tag, signature=signature))


#: Checks signatures while the reader asks gRPC for the next frame (gRPC reads a message only
#: when asked, so a check made in line delays the rest of the stream by its length).
_VERIFY_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="transport-verify")


class _Signatures:
    """A stream's signature checks, each run in a worker; `settle` says which one failed."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._pending: deque[tuple[Future[bool], str]] = deque()

    def check(self, message: bytes, signature: bytes, failure: str) -> None:
        """Check in a worker; IntegrityError(`failure`) from a later `settle` if it fails."""
        job = _VERIFY_POOL.submit(auth.verify, self.key, message, signature)
        self._pending.append((job, failure))

    def settle(self, wait: bool = True) -> None:
        """IntegrityError for the first failed check among those done (`wait`: all of them)."""
        while self._pending and (wait or self._pending[0][0].done()):
            job, failure = self._pending.popleft()
            if not job.result():
                raise IntegrityError(failure)


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
        self._signatures = _Signatures(signer_key)

    def read(
        self, frames: Iterable[FrameLike], whole: bool = True
    ) -> tuple[str, dict[str, torch.Tensor]]:
        """(tag, tensors) of a complete, verified stream; IntegrityError or LimitExceeded else.

        `whole`: the stream must end with its end frame; otherwise reading stops there (the
        frames after it are the next push of a push stream).
        """
        try:
            return self._read(iter(frames), whole)
        except (IntegrityError, LimitExceeded):
            # a bad signature still being checked came earlier in the stream: it is the refusal
            self._signatures.settle()
            raise

    def _read(
        self, stream: Iterator[FrameLike], whole: bool
    ) -> tuple[str, dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {}
        for frame in stream:
            self.alive()
            self._signatures.settle(wait=False)
            kind = frame.WhichOneof("kind")
            if kind == "header":
                header = cast(pb.Frame, frame).header
                name, tensor = self._read_tensor(header, len(tensors), stream)
                if name in tensors:
                    raise IntegrityError(f"tensor {name!r} sent twice")
                tensors[name] = tensor
            elif kind == "bundle":
                bundle = cast(pb.Frame | BundleFrame, frame).bundle
                for name, tensor in self._read_bundle(bundle, len(tensors)):
                    if name in tensors:
                        raise IntegrityError(f"tensor {name!r} sent twice")
                    tensors[name] = tensor
            elif kind == "end":
                tag = self._check_end(cast(pb.Frame, frame).end, len(tensors))
                if whole and next(stream, None) is not None:
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
        self._signatures.settle()
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

    def _read_bundle(
        self, bundle: pb.Bundle | BundleView, first: int
    ) -> list[tuple[str, torch.Tensor]]:
        payload = bundle.payload
        if not bundle.headers or len(payload) > MAX_CHUNK_BYTES:
            raise IntegrityError(f"bundle of {len(bundle.headers)} tensors, {len(payload)} bytes")
        raw_headers = list(bundle.headers)
        headers = [self._parse_header(raw, first + i) for i, raw in enumerate(raw_headers)]
        if sum(h.nbytes for h in headers) != len(payload):
            raise IntegrityError(f"bundle of tensors {first}.. does not hold its announced bytes")
        digest = bytes(blake3(payload).digest())
        if not hmac.compare_digest(bundle.digest, digest):
            raise IntegrityError(f"payload digest of the bundle at tensor {first} does not match")
        message = auth.bundle_message(self.session, first, raw_headers, digest)
        failure = f"bad signature on the bundle at tensor {first}"
        self._signatures.check(message, bundle.signature, failure)
        out: list[tuple[str, torch.Tensor]] = []
        view = memoryview(payload)
        start = 0
        for header in headers:
            buffer = self._open_buffer(header)
            try:
                buffer.write(view[start : start + header.nbytes])
                out.append((header.name, buffer.finish()))
            except CodecError as exc:
                raise IntegrityError(f"tensor {header.name!r}: {exc}") from None
            start += header.nbytes
        return out

    def _check_trailer(
        self, trailer: pb.Trailer, raw_header: bytes, sequence: int, digest: bytes
    ) -> None:
        if not hmac.compare_digest(trailer.digest, digest):
            raise IntegrityError(f"payload digest of tensor {sequence} does not match")
        message = auth.trailer_message(self.session, sequence, raw_header, digest)
        failure = f"bad signature on the trailer of tensor {sequence}"
        self._signatures.check(message, trailer.signature, failure)
