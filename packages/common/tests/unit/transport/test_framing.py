import random
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlnode.common.transport import auth, wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.codec import encode
from mlnode.common.transport.errors import (
    IntegrityError,
    LimitExceeded,
    ListingMismatch,
    MalformedFrame,
    SessionRevoked,
)
from mlnode.common.transport.framing import FrameReader, Limits, write_frames

SENDER = auth.Identity.from_seed(b"s" * 32)
SESSION = b"\x07" * 32
LIMITS = Limits(max_tensor_bytes=1 << 20, max_tensors=8, max_header_bytes=1024)
TENSORS = {"a": torch.arange(100, dtype=torch.float32), "b": torch.ones(3, 3, dtype=torch.bfloat16)}


def frames(tensors=TENSORS, session=SESSION, signer=SENDER, task="t", tag="r1"):
    """The stream as protobuf frames, so tests can edit them."""
    encoded = [encode(n, t) for n, t in tensors.items()]
    written = write_frames(
        encoded, session=session, signer=signer, task=task, tag=tag, chunk_bytes=64
    )
    return [pb.Frame.FromString(wire.serialize(f)) for f in written]


def read(stream, **kwargs):
    options = {"session": SESSION, "signer_key": SENDER.public_key, "task": "t", "limits": LIMITS}
    return FrameReader(**{**options, **kwargs}).read(stream)


def test_round_trip() -> None:
    tag, out = read(frames())
    assert tag == "r1" and list(out) == ["a", "b"]
    assert all(torch.equal(out[k], TENSORS[k]) for k in TENSORS)


def test_round_trip_through_the_zero_copy_wire_path() -> None:
    encoded = [encode(n, t) for n, t in TENSORS.items()]
    written = write_frames(
        encoded, session=SESSION, signer=SENDER, task="t", tag="r1", chunk_bytes=64
    )
    parsed = [wire.parse(wire.serialize(f)) for f in written]
    assert any(isinstance(f, wire.ChunkFrame) for f in parsed)
    tag, out = read(parsed)
    assert all(torch.equal(out[k], TENSORS[k]) for k in TENSORS)


def test_empty_set_round_trips() -> None:
    assert read(frames(tensors={})) == ("r1", {})


def chunk_indices(stream: list[pb.Frame]) -> list[int]:
    return [i for i, f in enumerate(stream) if f.WhichOneof("kind") == "chunk"]


def test_flipped_bit_in_a_chunk() -> None:
    stream = frames()
    i = chunk_indices(stream)[2]
    data = bytearray(stream[i].chunk)
    data[5] ^= 0x10
    stream[i] = pb.Frame(chunk=bytes(data))
    with pytest.raises(IntegrityError, match="digest"):
        read(stream)


def test_flipped_bit_with_recomputed_digest_fails_the_signature() -> None:
    stream = frames(tensors={"a": torch.zeros(4)})
    stream[1] = pb.Frame(chunk=b"\1" + stream[1].chunk[1:])
    tampered = frames(tensors={"a": torch.tensor([2.0**-149, 0, 0, 0])})  # same length, other bytes
    stream[2] = pb.Frame(
        trailer=pb.Trailer(digest=tampered[2].trailer.digest, signature=stream[2].trailer.signature)
    )
    with pytest.raises(IntegrityError, match="signature"):
        read(stream)


def test_signature_by_another_key() -> None:
    with pytest.raises(IntegrityError, match="signature"):
        read(frames(signer=auth.Identity.generate()))


def test_a_bad_signature_checked_beside_the_reading_is_still_named() -> None:
    # signatures are checked in a worker while later frames are read; the first bad one decides
    three = {"a": torch.zeros(4), "b": torch.ones(4), "c": torch.ones(2)}
    stream = frames(tensors=three)
    first = next(i for i, f in enumerate(stream) if f.WhichOneof("kind") == "trailer")
    digest = stream[first].trailer.digest
    stream[first] = pb.Frame(trailer=pb.Trailer(digest=digest, signature=bytes(64)))
    with pytest.raises(IntegrityError, match="signature on the trailer of tensor 0"):
        read(stream)
    encoded = [encode(n, t) for n, t in three.items()]
    written = write_frames(
        encoded, session=SESSION, signer=SENDER, task="t", tag="r1", chunk_bytes=64, bundle=True
    )
    bundled = [pb.Frame.FromString(wire.serialize(f)) for f in written]
    assert bundled[0].WhichOneof("kind") == "bundle"
    bundled[0].bundle.signature = bytes(64)
    with pytest.raises(IntegrityError, match="signature on the bundle at tensor 0"):
        read(bundled)


def test_a_bad_signature_is_named_before_a_later_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    # the trailer's check still runs in a worker when the end frame's count is found wrong
    verify = auth.verify

    def slow_verify(key: bytes, message: bytes, signature: bytes) -> bool:
        time.sleep(0.2)
        return verify(key, message, signature)

    monkeypatch.setattr(auth, "verify", slow_verify)
    stream = frames(tensors={"a": torch.zeros(4), "b": torch.ones(4)})
    first = next(i for i, f in enumerate(stream) if f.WhichOneof("kind") == "trailer")
    digest = stream[first].trailer.digest
    stream[first] = pb.Frame(trailer=pb.Trailer(digest=digest, signature=bytes(64)))
    stream[-1].end.count += 1
    with pytest.raises(IntegrityError, match="signature on the trailer of tensor 0"):
        read(stream)


def test_frames_of_another_session_do_not_verify() -> None:
    with pytest.raises(IntegrityError, match="signature"):
        read(frames(session=b"\x08" * 32))


@pytest.mark.parametrize("cut", [1, 3, -2, -1])
def test_truncated_stream(cut: int) -> None:
    with pytest.raises(IntegrityError, match="truncated|end frame"):
        read(frames()[:cut])


def test_reordered_chunks() -> None:
    stream = frames()
    i, j = chunk_indices(stream)[:2]
    stream[i], stream[j] = stream[j], stream[i]
    with pytest.raises(IntegrityError, match="digest"):
        read(stream)


def test_duplicated_chunk() -> None:
    stream = frames()
    i = chunk_indices(stream)[1]
    stream.insert(i, stream[i])
    with pytest.raises(IntegrityError):
        read(stream)


def test_reordered_tensors() -> None:
    stream = frames()
    first_end = next(i for i, f in enumerate(stream) if f.WhichOneof("kind") == "trailer") + 1
    swapped = stream[first_end:-1] + stream[:first_end] + stream[-1:]
    with pytest.raises(IntegrityError, match="out of order"):
        read(swapped)


def test_frames_after_end_are_refused() -> None:
    stream = frames()
    with pytest.raises(IntegrityError, match="after the end"):
        read([*stream, stream[0]])


def test_oversized_header() -> None:
    stream = frames(tensors={"x" * 2000: torch.zeros(1)})
    with pytest.raises(LimitExceeded, match="MAX_HEADER_BYTES"):
        read(stream)


def test_tensor_over_size_limit_is_refused_before_allocation() -> None:
    header = pb.TensorHeader(
        name="huge", dtype="float32", shape=[1 << 40], nbytes=4 << 40, task="t", tag="r1"
    )
    with pytest.raises(LimitExceeded, match="MAX_TENSOR_BYTES"):
        read([pb.Frame(header=header.SerializeToString())])


def test_too_many_tensors() -> None:
    many = {f"t{i}": torch.zeros(1) for i in range(9)}
    with pytest.raises(LimitExceeded, match="MAX_TENSORS"):
        read(frames(tensors=many))


def test_header_for_another_task() -> None:
    with pytest.raises(IntegrityError, match="another task"):
        read(frames(task="other"))


def test_revocation_stops_reading() -> None:
    calls = []

    def alive() -> None:
        calls.append(1)
        if len(calls) > 3:
            raise SessionRevoked("removed")

    with pytest.raises(SessionRevoked):
        read(frames(), alive=alive)


def test_1000_random_garbage_frames_never_deliver() -> None:
    rng = random.Random(1234)
    valid = frames()
    for _ in range(1000):
        stream = list(valid)
        position = rng.randrange(len(stream))
        if rng.random() < 0.5:
            garbage = pb.Frame(chunk=rng.randbytes(rng.randrange(0, 200)))
        else:
            raw = rng.randbytes(rng.randrange(1, 200))
            try:
                garbage = pb.Frame.FromString(raw)
            except Exception:
                garbage = pb.Frame(header=raw)
        stream[position] = garbage
        with pytest.raises((IntegrityError, LimitExceeded)):
            read(stream)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_frame_bytes_never_deliver(raws: list[bytes]) -> None:
    stream = []
    for raw in raws:
        try:
            stream.append(pb.Frame.FromString(raw))
        except Exception:
            stream.append(pb.Frame(chunk=raw))
    with pytest.raises((IntegrityError, LimitExceeded)):
        read(stream)


def test_header_check_refuses_before_anything_is_reserved() -> None:
    reserved: list[int] = []

    def as_listed(name: str, dtype, shape) -> None:
        if (name, shape) != ("a", (100,)):
            raise ListingMismatch(f"{name} {shape} is not as listed")

    with pytest.raises(ListingMismatch, match="b"):
        read(frames(), check=as_listed, reserve=reserved.append)
    assert reserved == [400]  # "a" was as listed; "b" was refused before its buffer


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [
        ("uint8", [0, 1 << 62, 4], 0),
        ("uint8", [0, (1 << 63) - 1], 0),
        ("float32", [-1], 4),
        ("complex64", [1], 8),
        ("float32", [3], 4),
    ],
)
def test_absurd_headers_are_malformed(dtype: str, shape: list[int], nbytes: int) -> None:
    header = pb.TensorHeader(name="x", dtype=dtype, shape=shape, nbytes=nbytes, task="t", tag="r")
    with pytest.raises(MalformedFrame) as caught:
        read([pb.Frame(header=header.SerializeToString())])
    assert caught.value.grpc_status == "INVALID_ARGUMENT"
