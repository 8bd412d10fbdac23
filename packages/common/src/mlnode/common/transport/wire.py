"""Frame (de)serialization with zero-copy paths for the frames that carry payload bytes.

A chunk frame is exactly one protobuf field (tag 2, length-delimited), so it is written as
tag + length + payload in one copy and read back as a view of the received message, instead of
through protobuf objects (three more copies of every payload byte). A bundle frame is written
the same way, field by field in protobuf's own order, and read back by a scan that accepts only
the shape protobuf itself would read the same way (each field once, headers repeated). Every
other frame, and any message outside those exact shapes, goes through protobuf.
"""

from __future__ import annotations

from typing import Literal

from google.protobuf.message import DecodeError

from mlnode.common.transport._gen import tensor_pb2 as pb

_CHUNK_TAG = 0x12  # field 2, wire type 2 (length-delimited)
_BUNDLE_TAG = 0x2A  # field 5, wire type 2
#: Bundle's fields by tag byte (field number << 3 | 2): all length-delimited.
_HEADERS, _PAYLOAD, _DIGEST, _SIGNATURE = 0x0A, 0x12, 0x1A, 0x22


class ChunkFrame:
    """A received chunk frame whose payload is a view of the message bytes."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: memoryview) -> None:
        self.chunk = chunk

    def WhichOneof(self, group: str) -> Literal["chunk"]:  # the protobuf name
        """The oneof case, as `pb.Frame.WhichOneof` says it."""
        return "chunk"


class BundleView:
    """A received bundle; `payload` is a view of the message bytes (`pb.Bundle`'s fields)."""

    __slots__ = ("headers", "payload", "digest", "signature")

    def __init__(
        self, headers: list[bytes], payload: memoryview, digest: bytes, signature: bytes
    ) -> None:
        self.headers = headers
        self.payload = payload
        self.digest = digest
        self.signature = signature


class BundleFrame:
    """A received bundle frame read without copying its payload."""

    __slots__ = ("bundle", "wire_bytes")

    def __init__(self, bundle: BundleView, wire_bytes: int) -> None:
        self.bundle = bundle
        self.wire_bytes = wire_bytes

    def WhichOneof(self, group: str) -> Literal["bundle"]:  # the protobuf name
        """The oneof case, as `pb.Frame.WhichOneof` says it."""
        return "bundle"


class BadFrame:
    """Bytes that are not a Frame: the reader refuses them like any unexpected frame."""

    __slots__ = ()

    def WhichOneof(self, group: str) -> Literal["unparsable"]:  # the protobuf name
        """A case no valid frame has."""
        return "unparsable"


#: What readers get: a protobuf frame, a zero-copy chunk or bundle, or bytes that did not parse.
FrameLike = pb.Frame | ChunkFrame | BundleFrame | BadFrame
#: What writers give: a protobuf frame or an already serialized chunk frame.
WireFrame = pb.Frame | bytes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def chunk_frame(payload: memoryview) -> bytes:
    """The serialized `Frame(chunk=payload)`, built with one copy of the payload."""
    return b"".join((bytes((_CHUNK_TAG,)), _varint(payload.nbytes), payload))


def _field(tag: int, data: bytes) -> tuple[bytes, bytes, bytes]:
    return bytes((tag,)), _varint(len(data)), data


def bundle_frame(
    headers: list[bytes], payloads: list[memoryview], digest: bytes, signature: bytes
) -> bytes:
    """The serialized `Frame(bundle=Bundle(...))`, payloads end to end, with one copy of them.

    Byte for byte what protobuf writes (an empty payload field is left out, as proto3 does).
    """
    size = sum(p.nbytes for p in payloads)
    inner: list[bytes | memoryview] = []
    for header in headers:
        inner += _field(_HEADERS, header)
    if size:
        inner += [bytes((_PAYLOAD,)), _varint(size), *payloads]
    inner += [*_field(_DIGEST, digest), *_field(_SIGNATURE, signature)]
    length = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in inner)
    return b"".join([bytes((_BUNDLE_TAG,)), _varint(length), *inner])


def serialize(frame: WireFrame) -> bytes:
    """Bytes of a frame for gRPC."""
    if isinstance(frame, bytes):
        return frame
    return bytes(frame.SerializeToString())


def _read_varint(raw: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(raw) and shift < 64:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _parse_bundle(raw: bytes) -> BundleFrame | None:
    """The bundle in `raw` when it has exactly the shape `bundle_frame` writes; None else."""
    outer = _read_varint(raw, 1)
    if outer is None or outer[1] + outer[0] != len(raw):
        return None
    view = memoryview(raw)
    headers: list[bytes] = []
    single: dict[int, memoryview] = {}
    pos = outer[1]
    while pos < len(raw):
        tag = raw[pos]
        length = _read_varint(raw, pos + 1)
        if length is None or length[1] + length[0] > len(raw):
            return None
        start, pos = length[1], length[1] + length[0]
        if tag == _HEADERS:
            headers.append(bytes(view[start:pos]))
        elif tag in (_PAYLOAD, _DIGEST, _SIGNATURE) and tag not in single:
            single[tag] = view[start:pos]
        else:  # another field, or one twice: protobuf's rules decide
            return None
    empty = memoryview(b"")
    bundle = BundleView(
        headers,
        single.get(_PAYLOAD, empty),
        bytes(single.get(_DIGEST, empty)),
        bytes(single.get(_SIGNATURE, empty)),
    )
    return BundleFrame(bundle, len(raw))


def parse(raw: bytes) -> FrameLike:
    """A frame from gRPC bytes; never raises, so garbage is refused in-band, not logged."""
    if raw[:1] == bytes((_CHUNK_TAG,)):
        length = _read_varint(raw, 1)
        if length is not None and length[1] + length[0] == len(raw):
            return ChunkFrame(memoryview(raw)[length[1] :])
    elif raw[:1] == bytes((_BUNDLE_TAG,)):
        bundle = _parse_bundle(raw)
        if bundle is not None:
            return bundle
    frame = pb.Frame()
    try:
        frame.ParseFromString(raw)
    except DecodeError:
        return BadFrame()
    return frame
