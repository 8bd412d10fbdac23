from typing import Any, cast

import numpy as np

from mlnode.common.transport import wire
from mlnode.common.transport._gen import tensor_pb2 as pb


def test_chunk_frames_are_plain_protobuf_on_the_wire() -> None:
    for size in [0, 1, 127, 128, 300, 1 << 20]:
        payload = np.random.default_rng(size).integers(0, 255, size, dtype=np.uint8).tobytes()
        raw = wire.chunk_frame(memoryview(payload))
        assert raw == pb.Frame(chunk=payload).SerializeToString()
        parsed = wire.parse(raw)
        assert isinstance(parsed, wire.ChunkFrame) and bytes(parsed.chunk) == payload


def test_anything_else_goes_through_protobuf() -> None:
    header = pb.Frame(header=b"h")
    assert wire.parse(header.SerializeToString()) == header
    # a chunk field followed by another field is not the fast path's exact shape
    mixed = pb.Frame(chunk=b"abc").SerializeToString() + pb.Frame(header=b"h").SerializeToString()
    parsed = wire.parse(mixed)
    assert isinstance(parsed, pb.Frame) and parsed.WhichOneof("kind") == "header"
    # a length that runs past the end is not a chunk, and not a Frame at all
    assert isinstance(wire.parse(b"\x12\x05ab"), wire.BadFrame)


def test_serialize_passes_bytes_through() -> None:
    assert wire.serialize(b"\x12\x00") == b"\x12\x00"
    assert wire.serialize(pb.Frame(header=b"x")) == pb.Frame(header=b"x").SerializeToString()


def _flat(messages: list[bytes]) -> list[Any]:
    return list(wire.unbundle(wire.parse(m) for m in messages))


def test_small_frames_travel_with_the_next_frame() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    header, trailer, end = (
        pb.Frame(header=b"h"),
        pb.Frame(trailer=pb.Trailer()),
        pb.Frame(end=pb.End(count=1)),
    )
    frames: list[wire.WireFrame] = [header, wire.chunk_frame(memoryview(payload)), trailer, end]
    messages = list(wire.bundled(frames))
    assert len(messages) == 2
    flat = _flat(messages)
    assert [f.WhichOneof("kind") for f in flat] == ["header", "chunk", "trailer", "end"]
    assert isinstance(flat[1], wire.ChunkFrame) and bytes(flat[1].chunk) == payload
    assert flat[2] == trailer and flat[3] == end
    # A lone frame is sent as itself, not as a bundle of one.
    assert list(wire.bundled([header])) == [header.SerializeToString()]


def test_a_bundle_stays_within_the_message_limit_and_frame_count() -> None:
    small = [pb.Frame(chunk=b"x" * 1000) for _ in range(40)]
    messages = list(wire.bundled(small))
    assert all(len(m) <= wire.HELD_BYTES + 2000 for m in messages)
    flat = _flat(messages)
    assert len(flat) == 40 and all(bytes(f.chunk) == b"x" * 1000 for f in flat)
    assert all(len(cast(wire.Bundle, wire.parse(m)).frames) <= wire.MAX_BUNDLED for m in messages)


def test_malformed_bundles_are_refused() -> None:
    one = pb.Frame(header=b"h").SerializeToString()
    entry = bytes([len(one)]) + one
    nested = b"\x00" + bytes([len(entry) + 1]) + b"\x00" + entry
    too_many = b"\x00" + entry * (wire.MAX_BUNDLED + 1)
    for raw in [b"\x00", b"\x00\x09" + one, b"\x00\x80", too_many]:
        assert isinstance(wire.parse(raw), wire.BadFrame)
    inner = wire.parse(nested)
    assert isinstance(inner, wire.Bundle) and isinstance(inner.frames[0], wire.BadFrame)
    # A reader that does not unbundle sees a kind no valid frame has.
    assert wire.parse(b"\x00" + entry * 2).WhichOneof("kind") == "bundle"
