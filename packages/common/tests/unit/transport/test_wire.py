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
