"""Frame (de)serialization with a zero-copy path for chunk frames, the bulk of every stream.

A chunk frame is exactly one protobuf field (tag 2, length-delimited), so it is written as
tag + length + payload in one copy and read back as a view of the received message, instead of
through protobuf objects (three more copies of every payload byte). Every other frame, and any
message that is not exactly one chunk field, goes through protobuf.

A bundle carries several frames in one gRPC message: the small header, trailer and end frames
travel with the frame after them instead of each costing a message of its own. It starts with
a zero byte (no protobuf message does: field 0 does not exist), then each frame as its length
and bytes. A bundle only groups frames: the reader checks each frame as if it came alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

from google.protobuf.message import DecodeError

from mlnode.common.transport._gen import tensor_pb2 as pb

_CHUNK_TAG = 0x12  # field 2, wire type 2 (length-delimited)
_BUNDLE = b"\x00"
#: Frames one bundle may hold (a header, a trailer and an end before a chunk are the most sent).
MAX_BUNDLED = 8
#: Bytes of small frames held for the next one: a bundle stays within the 64 KiB that gRPC's
#: message limit leaves above the largest frame (`transport.channel_options`).
HELD_BYTES = 16 << 10


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


class Bundle:
    """Frames received in one message, each to be read as if it came alone."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[pb.Frame | ChunkFrame | BadFrame]) -> None:
        self.frames = frames

    def WhichOneof(self, group: str) -> Literal["bundle"]:  # the protobuf name
        """A case no valid frame has: a reader that does not unbundle refuses it."""
        return "bundle"


#: What readers get: a protobuf frame, a zero-copy chunk, bytes that did not parse, or a bundle.
FrameLike = pb.Frame | ChunkFrame | BadFrame | Bundle
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


def _read_varint(raw: bytes | memoryview, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(raw) and shift < 64:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def bundled(frames: Iterable[WireFrame]) -> Iterator[bytes]:
    """Messages of `frames`: each small frame travels in one message with the frames after it."""
    held: list[bytes] = []
    held_bytes = 0
    for frame in frames:
        raw = serialize(frame)
        if held_bytes + len(raw) <= HELD_BYTES and len(held) < MAX_BUNDLED - 1:
            held.append(raw)
            held_bytes += len(raw)
            continue
        yield _join([*held, raw])
        held, held_bytes = [], 0
    if held:
        yield _join(held)


def _join(frames: list[bytes]) -> bytes:
    if len(frames) == 1:
        return frames[0]
    pieces = [_BUNDLE]
    for raw in frames:
        pieces += [_varint(len(raw)), raw]
    return b"".join(pieces)


def unbundle(frames: Iterable[FrameLike]) -> Iterator[FrameLike]:
    """Every frame of `frames`, with each bundle's frames in its place."""
    for frame in frames:
        if isinstance(frame, Bundle):
            yield from frame.frames
        else:
            yield frame


def _parse_bundle(raw: bytes) -> FrameLike:
    view = memoryview(raw)
    frames: list[pb.Frame | ChunkFrame | BadFrame] = []
    pos = 1
    while pos < len(raw):
        found = _read_varint(raw, pos)
        if found is None or found[1] + found[0] > len(raw) or len(frames) == MAX_BUNDLED:
            return BadFrame()
        length, pos = found
        part = view[pos : pos + length]
        pos += length
        frames.append(_parse_one(part))  # a nested bundle does not parse: field 0
    return Bundle(frames) if frames else BadFrame()


def parse(raw: bytes) -> FrameLike:
    """A frame from gRPC bytes; never raises, so garbage is refused in-band, not logged."""
    if raw[:1] == _BUNDLE:
        return _parse_bundle(raw)
    return _parse_one(raw)


def _parse_one(raw: bytes | memoryview) -> pb.Frame | ChunkFrame | BadFrame:
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
