"""Push streams on real in-process transports: many pushes after one handshake, each push
bound to its own derived session, every stream bound enforced, and the fallback to `Push`."""

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import torch

from mlnode.common.transport import auth, wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.client import CallTimeouts, PeerClient
from mlnode.common.transport.codec import encode
from mlnode.common.transport.errors import NotAuthenticated
from mlnode.common.transport.framing import write_frames
from mlnode.common.transport.interceptors import PUSH, PUSH_STREAM
from mlnode.common.transport.push_stream import PushStream

from .conftest import Pair

PAYLOAD = {"w": torch.arange(20_000, dtype=torch.float32), "b": torch.ones(7, dtype=torch.int64)}


def stream_of(pair: Pair) -> PushStream | None:
    return pair.alice.streams.slot("bob", pair.alice._permits("bob")).stream


class RawStream:
    """One PushStream call whose frames the test writes itself (to break the protocol)."""

    def __init__(self, pair: Pair, identity: Identity | None = None, method: str = PUSH_STREAM):
        self.identity = identity or pair.alice.identity
        self.channel = grpc.insecure_channel(f"127.0.0.1:{pair.bob.port}")
        client = PeerClient(
            self.channel,
            self.identity,
            pair.bob_peer(),
            pair.alice.limits,
            16384,
            CallTimeouts(5, 30),
        )
        self.session, self.metadata = client.handshake("t", method)
        self.frames: queue.Queue[Any] = queue.Queue()
        call = self.channel.stream_stream(
            PUSH_STREAM,
            request_serializer=wire.serialize,
            response_deserializer=pb.PushReply.FromString,
        )
        self.replies: Iterator[pb.PushReply] = call(
            iter(self.frames.get, None), metadata=self.metadata, timeout=30
        )

    def push_frames(self, index: int, tensors=PAYLOAD, tag: str = "r", session=None) -> list[Any]:
        written = write_frames(
            [encode(n, t) for n, t in tensors.items()],
            session=session or auth.push_session(self.session, index),
            signer=self.identity,
            task="t",
            tag=tag,
            chunk_bytes=16384,
        )
        return [pb.Frame.FromString(wire.serialize(f)) for f in written]

    def send(self, frames: list[Any]) -> grpc.StatusCode | int:
        """The push's reply (the count accepted), or the status code that ended the call."""
        for frame in frames:
            self.frames.put(frame)
        try:
            return next(self.replies).accepted
        except grpc.RpcError as exc:
            return exc.code()


def received(pair: Pair, tag: str) -> dict[str, torch.Tensor]:
    return pair.bob.receive("t", tag, ["alice"], timeout=10)["alice"]


def test_many_pushes_share_one_stream_and_arrive_exactly(pair: Pair) -> None:
    pair.alice.send("bob", PAYLOAD, "t", "r0")
    stream = stream_of(pair)
    assert stream is not None
    for i in range(1, 20):
        pair.alice.send("bob", {"x": torch.full((1000,), float(i))}, "t", f"r{i}")
    assert stream_of(pair) is stream and stream.pushes == 20
    first = received(pair, "r0")
    assert all(torch.equal(first[n], t) for n, t in PAYLOAD.items())
    for i in range(1, 20):
        assert torch.equal(received(pair, f"r{i}")["x"], torch.full((1000,), float(i)))


def test_a_bundle_carries_many_small_tensors_bit_exact(pair: Pair) -> None:
    tensors: dict[str, Any] = {f"t{i}": torch.randn(i * 37) for i in range(40)}
    tensors |= {
        "big": torch.randn(300_000),  # not bundled: between two bundles
        "scalar": torch.tensor(3.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "mask": torch.tensor([True, False, True]),
        "strided": torch.arange(100, dtype=torch.int32).reshape(10, 10).t(),
    }
    frames = list(
        write_frames(
            [encode(n, t) for n, t in tensors.items()],
            session=b"s" * 32,
            signer=pair.alice.identity,
            task="t",
            tag="b",
            chunk_bytes=64 * 1024,
            bundle=True,
        )
    )
    kinds = [wire.parse(wire.serialize(f)).WhichOneof("kind") for f in frames]
    assert kinds.count("bundle") >= 2 and kinds.count("header") == 1
    pair.alice.send("bob", tensors, "t", "b")
    got = received(pair, "b")
    assert list(got) == list(tensors)
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor)


def test_honest_client_stays_inside_the_bounds(pairs: Callable[..., Pair]) -> None:
    bounds = {"stream_pushes": 3, "stream_bytes": 300_000}
    pair = pairs(bounds, bounds)
    for i in range(8):
        pair.alice.send("bob", {"x": torch.full((30_000,), float(i))}, "t", f"r{i}")
        assert torch.equal(received(pair, f"r{i}")["x"], torch.full((30_000,), float(i)))


def test_too_many_pushes_on_a_stream(pairs: Callable[..., Pair]) -> None:
    pair = pairs(None, {"stream_pushes": 2})
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(0, tag="a")) == 2
    assert raw.send(raw.push_frames(1, tag="b")) == 2
    assert raw.send(raw.push_frames(2, tag="c")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert set(received(pair, "b")) == set(PAYLOAD)
    assert pair.bob.receive("t", "c", ["alice"], timeout=0.3) == {}


def test_too_many_bytes_on_a_stream(pairs: Callable[..., Pair]) -> None:
    pair = pairs(None, {"stream_bytes": 120_000})
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(0, tag="a")) == 2  # about 80 kB
    assert raw.send(raw.push_frames(1, tag="b")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert pair.bob.receive("t", "b", ["alice"], timeout=0.3) == {}


def test_a_stream_past_its_lifetime_is_ended(pairs: Callable[..., Pair]) -> None:
    pair = pairs(None, {"stream_lifetime_s": 1.0})
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(0, tag="a")) == 2
    time.sleep(1.5)
    assert raw.send(raw.push_frames(1, tag="b")) == grpc.StatusCode.CANCELLED
    assert pair.bob.receive("t", "b", ["alice"], timeout=0.3) == {}


def test_a_stream_idle_between_pushes_is_ended(pairs: Callable[..., Pair]) -> None:
    pair = pairs(None, {"stream_idle_s": 0.5})
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(0, tag="a")) == 2
    time.sleep(1.2)
    assert raw.send(raw.push_frames(1, tag="b")) == grpc.StatusCode.CANCELLED


def test_replayed_push_is_refused(pair: Pair) -> None:
    raw = RawStream(pair)
    first = raw.push_frames(0, tag="a")
    assert raw.send(first) == 2
    assert raw.send(first) == grpc.StatusCode.DATA_LOSS  # push 0 again as push 1
    assert pair.bob.receive("t", "a", ["alice"], timeout=5) != {}
    assert pair.bob.inbox.pending() == []


def test_reordered_pushes_are_refused(pair: Pair) -> None:
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(1, tag="b")) == grpc.StatusCode.DATA_LOSS
    assert pair.bob.inbox.pending() == []


def test_push_signed_under_the_stream_session_itself_is_refused(pair: Pair) -> None:
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(0, session=raw.session)) == grpc.StatusCode.DATA_LOSS


def test_push_recorded_on_another_stream_is_refused(pair: Pair) -> None:
    recorded = RawStream(pair)
    frames = recorded.push_frames(0, tag="a")
    assert recorded.send(frames) == 2
    assert RawStream(pair).send(frames) == grpc.StatusCode.DATA_LOSS


def test_tampered_push_and_bundle_are_refused(pair: Pair) -> None:
    raw = RawStream(pair)
    frames = raw.push_frames(0)
    chunk = next(i for i, f in enumerate(frames) if f.WhichOneof("kind") == "chunk")
    data = bytearray(frames[chunk].chunk)
    data[5] ^= 1
    frames[chunk] = pb.Frame(chunk=bytes(data))
    assert raw.send(frames) == grpc.StatusCode.DATA_LOSS

    raw = RawStream(pair)
    written = write_frames(
        [encode(n, t) for n, t in {"a": torch.ones(10), "b": torch.zeros(10)}.items()],
        session=auth.push_session(raw.session, 0),
        signer=raw.identity,
        task="t",
        tag="r",
        chunk_bytes=16384,
        bundle=True,
    )
    frames = [pb.Frame.FromString(wire.serialize(f)) for f in written]
    assert frames[0].WhichOneof("kind") == "bundle"
    payload = bytearray(frames[0].bundle.payload)
    payload[0] ^= 1
    frames[0].bundle.payload = bytes(payload)
    frames[0].bundle.digest = bytes(auth_digest(bytes(payload)))  # a matching digest, unsigned
    assert raw.send(frames) == grpc.StatusCode.DATA_LOSS
    assert pair.bob.inbox.pending() == []


def auth_digest(data: bytes) -> bytes:
    from blake3 import blake3

    return bytes(blake3(data).digest())


def test_stream_handshake_is_bound_to_its_method_and_used_once(pair: Pair) -> None:
    raw = RawStream(pair)
    assert raw.send(raw.push_frames(0)) == 2
    again = RawStream(pair)  # a fresh call replaying the first one's proof
    again.replies = again.channel.stream_stream(
        PUSH_STREAM,
        request_serializer=wire.serialize,
        response_deserializer=pb.PushReply.FromString,
    )(iter(again.frames.get, None), metadata=raw.metadata, timeout=30)
    assert again.send(raw.push_frames(0)) == grpc.StatusCode.UNAUTHENTICATED
    single = RawStream(pair, method=PUSH)  # a proof made for Push
    assert single.send(single.push_frames(0)) == grpc.StatusCode.UNAUTHENTICATED


def test_unregistered_key_and_other_task_are_refused(pair: Pair) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        RawStream(pair, Identity.generate())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(NotAuthenticated, match="not accepted for task 'other'"):
        pair.alice.send("bob", PAYLOAD, "other", "r")
    assert pair.bob.inbox.pending() == []


def test_removed_peer_cannot_push_on_its_open_stream(pair: Pair) -> None:
    pair.alice.send("bob", PAYLOAD, "t", "a")
    assert stream_of(pair) is not None
    pair.bob.peers.remove("alice")
    with pytest.raises(NotAuthenticated):
        pair.alice.send("bob", PAYLOAD, "t", "b")
    assert pair.bob.receive("t", "b", ["alice"], timeout=0.3) == {}


def test_falls_back_to_single_pushes_when_the_peer_offers_no_stream(
    pairs: Callable[..., Pair],
) -> None:
    pair = pairs(None, {"stream_pushes": 0})
    for i in range(3):
        pair.alice.send("bob", {"x": torch.full((5,), float(i))}, "t", f"r{i}")
        assert torch.equal(received(pair, f"r{i}")["x"], torch.full((5,), float(i)))
    slot = pair.alice.streams.slot("bob", pair.alice._permits("bob"))
    assert slot.stream is None and not slot.offered


def test_idle_stream_is_closed_and_its_call_given_back(pairs: Callable[..., Pair]) -> None:
    pair = pairs({"stream_idle_s": 1.0})
    pair.alice.send("bob", PAYLOAD, "t", "a")
    assert stream_of(pair) is not None
    deadline = time.monotonic() + 10
    while stream_of(pair) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stream_of(pair) is None
    assert pair.alice._permits("bob")._value == pair.alice.settings.max_calls_per_peer
