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


def _bundle(headers: list[bytes], payloads: list[bytes]) -> pb.Frame:
    return pb.Frame(
        bundle=pb.Bundle(
            headers=headers, payload=b"".join(payloads), digest=b"d" * 32, signature=b"s" * 64
        )
    )


def test_bundle_frames_are_plain_protobuf_on_the_wire() -> None:
    rng = np.random.default_rng(0)
    for sizes in [[0], [1, 127], [128, 300, 0], [1 << 20], [5] * 200]:
        payloads = [rng.integers(0, 255, n, dtype=np.uint8).tobytes() for n in sizes]
        headers = [f"header {i}".encode() * (i + 1) for i in range(len(sizes))]
        raw = wire.bundle_frame(headers, [memoryview(p) for p in payloads], b"d" * 32, b"s" * 64)
        expected = _bundle(headers, payloads)
        assert raw == expected.SerializeToString()
        parsed = wire.parse(raw)
        assert isinstance(parsed, wire.BundleFrame) and parsed.wire_bytes == len(raw)
        assert parsed.bundle.headers == headers
        assert bytes(parsed.bundle.payload) == b"".join(payloads)
        assert (parsed.bundle.digest, parsed.bundle.signature) == (b"d" * 32, b"s" * 64)


def test_a_bundle_in_any_other_shape_is_read_by_protobuf() -> None:
    canonical = _bundle([b"h"], [b"abc"]).SerializeToString()
    inner = canonical[2:]  # the Bundle message after the frame's tag and one-byte length
    # a payload field written twice: protobuf keeps the last one
    twice = inner + pb.Bundle(payload=b"xyz").SerializeToString()
    frame = bytes((0x2A, len(twice))) + twice
    parsed = wire.parse(frame)
    assert isinstance(parsed, pb.Frame) and parsed.bundle.payload == b"xyz"
    # an unknown field inside the bundle: protobuf skips it
    unknown = inner + b"\x2a\x01z"
    parsed = wire.parse(bytes((0x2A, len(unknown))) + unknown)
    assert isinstance(parsed, pb.Frame) and parsed.bundle.headers == [b"h"]
    # a field running past the end of the message does not parse at all
    cut = bytes((0x2A, len(inner))) + inner[:-1]
    assert isinstance(wire.parse(cut), wire.BadFrame)
