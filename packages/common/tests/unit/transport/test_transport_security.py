"""Attacks on a real in-process server: each delivers nothing and the server keeps serving."""

import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import torch

from mlnode.common.errors import PeerUnknown
from mlnode.common.transport import wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.api import TensorMeta
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.client import CallTimeouts, PeerClient
from mlnode.common.transport.codec import encode
from mlnode.common.transport.errors import ImpostorPeer, NotAuthenticated
from mlnode.common.transport.framing import write_frames
from mlnode.common.transport.interceptors import PUSH
from mlnode.common.transport.peers import Peer

from .conftest import Pair

PAYLOAD = {"w": torch.arange(50_000, dtype=torch.float32), "b": torch.ones(7, dtype=torch.int64)}


class Attacker:
    """A client that speaks the protocol itself, so it can break it on purpose."""

    def __init__(self, pair: Pair, identity: Identity | None = None) -> None:
        self.pair = pair
        self.identity = identity or pair.alice.identity
        self.channel = grpc.insecure_channel(f"127.0.0.1:{pair.bob.port}")
        self.push_call = self.channel.stream_unary(
            PUSH, request_serializer=wire.serialize, response_deserializer=pb.PushReply.FromString
        )
        self.client = PeerClient(
            self.channel,
            self.identity,
            pair.bob_peer(),
            pair.alice.limits,
            16 * 1024,
            CallTimeouts(5, 30),
        )

    def session(self, task: str = "t") -> tuple[bytes, tuple[Any, ...]]:
        return self.client.handshake(task, PUSH)

    def frames(self, session: bytes, tensors=PAYLOAD, signer=None, tag="r") -> list[pb.Frame]:
        encoded = [encode(n, t) for n, t in tensors.items()]
        signer = signer or self.identity
        written = write_frames(
            encoded, session=session, signer=signer, task="t", tag=tag, chunk_bytes=16 * 1024
        )
        return [pb.Frame.FromString(wire.serialize(f)) for f in written]

    def push(self, frames, metadata) -> grpc.StatusCode:
        try:
            self.push_call(iter(frames), metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.fixture
def spy(pair: Pair) -> list[object]:
    """Records each Push that reached the payload handler."""
    calls: list[object] = []
    handlers = pair.bob.handlers
    assert handlers is not None
    original = handlers.push

    def push(session, frames, whole=True):
        calls.append(session)
        return original(session, frames, whole)

    handlers.push = push  # type: ignore[method-assign]
    return calls


def assert_nothing_delivered_and_server_up(pair: Pair) -> None:
    assert pair.bob.inbox.pending() == []
    pair.alice.send("bob", {"ok": torch.ones(3)}, "t", "after")
    got = pair.bob.receive("t", "after", ["alice"], timeout=10)
    assert torch.equal(got["alice"]["ok"], torch.ones(3))


def chunk_positions(frames: list[pb.Frame]) -> list[int]:
    return [i for i, f in enumerate(frames) if f.WhichOneof("kind") == "chunk"]


def test_unknown_key_is_refused_before_any_payload_is_read(pair: Pair, spy: list[object]) -> None:
    stranger = Identity.generate()
    attacker = Attacker(pair, stranger)
    with pytest.raises(NotAuthenticated, match="not accepted for task"):
        attacker.client.send(PAYLOAD, "t", "r")
    # skipping Hello: a proof for a challenge never issued
    metadata = (("mlnode-key-bin", stranger.public_key), ("mlnode-task", "t"))
    frames = attacker.frames(b"\0" * 32)
    code = attacker.push(
        frames, (*metadata, ("mlnode-nonce-bin", b"n" * 32), ("mlnode-proof-bin", b"p" * 64))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert attacker.push(frames, ()) == grpc.StatusCode.UNAUTHENTICATED  # no metadata at all
    assert spy == []
    assert_nothing_delivered_and_server_up(pair)


def test_key_registered_for_another_task_is_refused(pair: Pair, spy: list[object]) -> None:
    with pytest.raises(NotAuthenticated, match="not accepted for task 'other'"):
        pair.alice.send("bob", PAYLOAD, "other", "r")
    assert spy == []
    assert_nothing_delivered_and_server_up(pair)


def test_bad_signature(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session, signer=Identity.generate())
    assert attacker.push(frames, metadata) == grpc.StatusCode.DATA_LOSS
    assert_nothing_delivered_and_server_up(pair)


def test_flipped_bit_in_a_chunk(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session)
    i = chunk_positions(frames)[3]
    data = bytearray(frames[i].chunk)
    data[1000] ^= 0x01
    frames[i] = pb.Frame(chunk=bytes(data))
    assert attacker.push(frames, metadata) == grpc.StatusCode.DATA_LOSS
    assert_nothing_delivered_and_server_up(pair)


@pytest.mark.parametrize("keep", [2, 5, -1], ids=["mid-tensor", "later", "no-end"])
def test_truncated_stream(pair: Pair, keep: int) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session)[:keep]
    assert attacker.push(frames, metadata) == grpc.StatusCode.DATA_LOSS
    assert_nothing_delivered_and_server_up(pair)


def test_reordered_chunks(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session)
    i, j = chunk_positions(frames)[1:3]
    frames[i], frames[j] = frames[j], frames[i]
    assert attacker.push(frames, metadata) == grpc.StatusCode.DATA_LOSS
    assert_nothing_delivered_and_server_up(pair)


def test_duplicated_chunk(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session)
    i = chunk_positions(frames)[2]
    frames.insert(i, frames[i])
    assert attacker.push(frames, metadata) == grpc.StatusCode.DATA_LOSS
    assert_nothing_delivered_and_server_up(pair)


def test_replayed_session_is_refused(pair: Pair, spy: list[object]) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session, tag="recorded")
    assert attacker.push(frames, metadata) == grpc.StatusCode.OK  # the genuine transfer
    assert set(pair.bob.receive("t", "recorded", ["alice"], timeout=5)) == {"alice"}
    # an eavesdropper replays the recorded call byte for byte
    assert attacker.push(frames, metadata) == grpc.StatusCode.UNAUTHENTICATED
    assert len(spy) == 1
    # even the key's owner cannot slip recorded frames into a fresh session
    _, fresh = attacker.session()
    assert attacker.push(frames, fresh) == grpc.StatusCode.DATA_LOSS
    assert_nothing_delivered_and_server_up(pair)


def test_oversized_header(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session, tensors={"n" * 5000: torch.zeros(1)})
    assert attacker.push(frames, metadata) == grpc.StatusCode.RESOURCE_EXHAUSTED
    session, metadata = attacker.session()
    huge = pb.TensorHeader(
        name="x", dtype="uint8", shape=[1 << 40], nbytes=1 << 40, task="t", tag="r"
    )
    code = attacker.push([pb.Frame(header=huge.SerializeToString())], metadata)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_nothing_delivered_and_server_up(pair)


def test_peer_removed_mid_session(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session)
    halfway = threading.Event()
    go_on = threading.Event()

    def slow() -> Iterator[pb.Frame]:
        for n, frame in enumerate(frames):
            if n == 4:
                halfway.set()
                go_on.wait(10)
            yield frame

    result: list[grpc.StatusCode] = []
    sender = threading.Thread(target=lambda: result.append(attacker.push(slow(), metadata)))
    sender.start()
    assert halfway.wait(10)
    pair.bob.peers.remove("alice")
    sender.join(10)  # the server ends the call at once, while the sender still holds frames
    go_on.set()
    # Which code the client sees depends on whether the removal cancels the call before or
    # after the handler reads the next frame; both are the server ending it.
    assert len(result) == 1
    assert result[0] in {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAUTHENTICATED}
    assert pair.bob.inbox.pending() == []
    pair.bob.peers.put(Peer("alice", pair.alice.identity.public_key, tasks=frozenset({"t"})))
    assert_nothing_delivered_and_server_up(pair)


def test_peer_changed_mid_session_ends_it_at_the_next_frame(pair: Pair) -> None:
    attacker = Attacker(pair)
    session, metadata = attacker.session()
    frames = attacker.frames(session)
    bob_knows_alice = pair.bob.peers.get("alice")
    assert bob_knows_alice is not None

    def changing() -> Iterator[pb.Frame]:
        for n, frame in enumerate(frames):
            if n == 4:  # narrowed to another task while the stream is open
                pair.bob.peers.put(
                    Peer("alice", bob_knows_alice.public_key, tasks=frozenset({"u"}))
                )
            yield frame

    assert attacker.push(changing(), metadata) in {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
    assert pair.bob.inbox.pending() == []
    pair.bob.peers.put(bob_knows_alice)
    assert_nothing_delivered_and_server_up(pair)


def test_1000_random_garbage_frames(pair: Pair) -> None:
    attacker = Attacker(pair)
    raw_push = attacker.channel.stream_unary(PUSH)  # bytes on the wire, no serializer
    rng = random.Random(7)
    codes: Counter[grpc.StatusCode] = Counter()
    for _ in range(1000):
        _, metadata = attacker.session()  # a valid session each time, so the reader sees it
        garbage = rng.randbytes(rng.randrange(0, 300))
        try:
            raw_push(iter([garbage]), metadata=metadata, timeout=10)
            codes[grpc.StatusCode.OK] += 1
        except grpc.RpcError as exc:
            codes[exc.code()] += 1
    assert set(codes) <= {
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }, codes
    assert_nothing_delivered_and_server_up(pair)


def test_client_refuses_an_impostor_server(pair: Pair) -> None:
    impostor = Identity.generate()
    pair.alice.peers.put(Peer("bob", impostor.public_key, f"127.0.0.1:{pair.bob.port}"))
    with pytest.raises(ImpostorPeer, match="answered with key"):
        pair.alice.send("bob", PAYLOAD, "t", "r")
    assert pair.bob.inbox.pending() == []


def test_removed_peer_cannot_start_again(pair: Pair) -> None:
    pair.bob.peers.remove("alice")
    with pytest.raises(PeerUnknown):
        pair.alice.send("bob", PAYLOAD, "t", "r")
    assert pair.bob.inbox.pending() == []


def test_pulls_need_a_key_registered_for_the_task(pair: Pair) -> None:
    class Provider:
        def describe(self) -> list[TensorMeta]:
            return [TensorMeta("w", torch.float32, (2,))]

        def get(self, name: str) -> torch.Tensor:
            return torch.ones(2)

    # alice serves; bob may pull only for tasks alice registered him for (any task here)
    pair.alice.serve("t", Provider())
    pair.alice.serve("u", Provider())
    pair.bob.peers.put(
        Peer("alice", pair.alice.identity.public_key, f"127.0.0.1:{pair.alice.port}")
    )
    assert list(pair.bob.fetch("alice", "u", ["w"])) == ["w"]
    pair.alice.peers.put(
        Peer("bob", pair.bob.identity.public_key, f"127.0.0.1:{pair.bob.port}", frozenset({"t"}))
    )
    with pytest.raises(NotAuthenticated, match="not accepted for task 'u'"):
        pair.bob.fetch("alice", "u", ["w"])
    with pytest.raises(NotAuthenticated):
        pair.bob.list_tensors("alice", "u")
    pair.alice.peers.remove("bob")
    with pytest.raises(NotAuthenticated, match="not accepted for task"):
        pair.bob.fetch("alice", "t", ["w"])
