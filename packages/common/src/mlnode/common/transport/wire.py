"""Frame (de)serialization with a zero-copy path for chunk frames, the bulk of every stream.

A chunk frame is exactly one protobuf field (tag 2, length-delimited), so it is written as
tag + length + payload in one copy and read back as a view of the received message, instead of
through protobuf objects (three more copies of every payload byte). Every other frame, and any
message that is not exactly one chunk field, goes through protobuf.
"""

from __future__ import annotations

from typing import Literal

from google.protobuf.message import DecodeError

from mlnode.common.transport._gen import tensor_pb2 as pb

_CHUNK_TAG = 0x12  # field 2, wire type 2 (length-delimited)


class ChunkFrame:
    """A received chunk frame whose payload is a view of the message bytes."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: memoryview) -> None:
        self.chunk = chunk

    def WhichOneof(self, group: str) -> Literal["chunk"]:  # the protobuf name
        """The oneof case, as `pb.Frame.WhichOneof` says it."""
        return "chunk"


class BadFrame:
    """Bytes that are not a Frame: the reader refuses them like any unexpected frame."""

    __slots__ = ()

    def WhichOneof(self, group: str) -> Literal["unparsable"]:  # the protobuf name
        """A case no valid frame has."""
        return "unparsable"


#: What readers get: a protobuf frame, a zero-copy chunk, or bytes that did not parse.
FrameLike = pb.Frame | ChunkFrame | BadFrame
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


def parse(raw: bytes) -> FrameLike:
    """A frame from gRPC bytes; never raises, so garbage is refused in-band, not logged."""
    if raw[:1] == bytes((_CHUNK_TAG,)):
        length = _read_varint(raw, 1)
        if length is not None and length[1] + length[0] == len(raw):
            return ChunkFrame(memoryview(raw)[length[1] :])
    frame = pb.Frame()
    try:
        frame.ParseFromString(raw)
    except DecodeError:
        return BadFrame()
    return frame
