"""Calls that would hold server threads or memory: each is refused or cut, honest pushes go on."""

import contextlib
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import torch

from mlnode.common.testing import WaitTimeout, wait_until
from mlnode.common.testing.hostile import Flood, HostileClient, half_open_call, hello_metadata
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.api import TensorMeta
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.errors import FetchCancelled
from mlnode.common.transport.interceptors import FETCH, HELLO, LIST, PUSH
from mlnode.common.transport.peers import Peer
from mlnode.common.transport.transport import GrpcTransport
from mlnode.common.transport.watchdog import PeerSlots, Watchdog

from .conftest import make_transport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_fires_only_expired_deadlines() -> None:
    clock = Clock()
    dog = Watchdog(clock=clock)
    fired: list[str] = []
    dog.arm(1.0, lambda: fired.append("a"))
    disarmed = dog.arm(1.0, lambda: fired.append("b"))
    dog.arm(5.0, lambda: fired.append("c"))
    dog.disarm(disarmed)
    clock.now = 1.0
    assert dog.fire_expired() == 1 and fired == ["a"]
    assert dog.fire_expired() == 0
    clock.now = 9.0
    assert dog.fire_expired() == 1 and fired == ["a", "c"]


def test_guarded_and_paced_iteration_disarm_as_they_go() -> None:
    clock = Clock()
    dog = Watchdog(clock=clock)
    expired: list[int] = []
    assert list(dog.guarded(iter([1, 2, 3]), 1.0, lambda: expired.append(1))) == [1, 2, 3]
    paced = dog.paced(iter([1, 2]), 1.0, lambda: expired.append(2))
    assert next(paced) == 1
    clock.now = 2.0  # the consumer did not come back for the next item in time
    assert dog.fire_expired() == 1 and expired == [2]


def test_peer_slots_bound_each_peer_alone() -> None:
    slots = PeerSlots(2)
    slots.acquire("a")
    slots.acquire("a")
    with pytest.raises(Exception, match="MAX_CALLS_PER_PEER"):
        slots.acquire("a")
    slots.acquire("b")
    slots.release("a")
    slots.acquire("a")
    assert slots.open_calls("a") == 2 and slots.open_calls("b") == 1


@pytest.fixture
def trio() -> Iterator[tuple[GrpcTransport, GrpcTransport, HostileClient]]:
    """alice (honest) and mallory (hostile, registered for "t") both know bob."""
    alice = make_transport()
    bob = make_transport(workers=4, max_calls_per_peer=2, idle_timeout_s=1.0)
    mallory = Identity.generate()
    alice.peers.put(Peer("bob", bob.identity.public_key, f"127.0.0.1:{bob.port}"))
    bob.peers.put(Peer("alice", alice.identity.public_key, tasks=frozenset({"t"})))
    bob.peers.put(Peer("mallory", mallory.public_key, tasks=frozenset({"t"})))
    hostile = HostileClient(f"127.0.0.1:{bob.port}", bob.identity.public_key, mallory, "t")
    yield alice, bob, hostile
    hostile.close()
    alice.stop()
    bob.stop()


def honest_push_works(alice: GrpcTransport, bob: GrpcTransport, tag: str) -> None:
    alice.send("bob", {"x": torch.arange(1000.0)}, "t", tag)
    got = bob.receive("t", tag, ["alice"], timeout=10)
    assert torch.equal(got["alice"]["x"], torch.arange(1000.0))


def test_calls_without_their_message_hold_no_thread(trio) -> None:
    alice, bob, hostile = trio
    stranger = Identity.generate().public_key
    known = alice.identity.public_key
    held = [
        hostile.half_open(method, metadata)
        for _ in range(10)  # 80 calls against 4 workers
        for method, metadata in [
            (HELLO, hello_metadata(stranger, "t")),
            (HELLO, hello_metadata(known, "t")),
            (HELLO, hello_metadata(known, "other")),
            (PUSH, hello_metadata(known, "t")),
            (LIST, ()),
            (FETCH, hello_metadata(stranger, "t")),
            ("/mlnode.transport.v1.Transport/Nope", ()),
            ("/other.Service/Call", ()),
        ]
    ]
    honest_push_works(alice, bob, "during")
    for future in held:  # each was answered although it never sent its message
        future.exception(timeout=10)
    codes = {f.code() for f in held}
    assert {
        grpc.StatusCode.OK,  # a Hello naming a known key is answered from its headers
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    } <= codes
    # this client never closes its side: beyond MAX_STREAMS_PER_CONNECTION the server refuses
    # new streams on the connection (RST_STREAM REFUSED_STREAM)
    assert codes - {grpc.StatusCode.UNAVAILABLE} == {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }


def test_hello_is_answered_from_headers_alone(trio) -> None:
    alice, _, hostile = trio
    future = hostile.half_open(HELLO, hello_metadata(alice.identity.public_key, "t"))
    reply = pb.HelloReply.FromString(future.result(timeout=10))
    assert len(reply.server_nonce) == 32


def test_refusals_do_not_say_whose_key_it_is(trio) -> None:
    alice, _, hostile = trio
    messages = []
    for key in (alice.identity.public_key, Identity.generate().public_key):
        future = hostile.half_open(HELLO, hello_metadata(key, "other"))
        messages.append(future.exception(timeout=10).details())
    assert all("alice" not in m and "not accepted for task 'other'" in m for m in messages)


def test_a_registered_peers_idle_calls_are_capped_and_cut(trio) -> None:
    alice, bob, hostile = trio
    idle = [hostile.idle_session(PUSH) for _ in range(6)] + [hostile.idle_session(FETCH)]
    time.sleep(0.3)
    refused = [f for f in idle if f.done()]
    assert len(refused) == len(idle) - 2  # MAX_CALLS_PER_PEER = 2
    assert {f.exception().code() for f in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    honest_push_works(alice, bob, "during")  # alice has her own slots and threads
    for future in idle:  # the two admitted ones end at the idle deadline (1 s)
        assert future.exception(timeout=10) is not None
    time.sleep(0.5)  # the server frees their slots just after the client sees the end
    assert hostile.idle_session(PUSH).exception(timeout=10).code() == grpc.StatusCode.CANCELLED


def test_fetch_that_is_never_read_is_cut(trio) -> None:
    alice, bob, hostile = trio

    class Big:
        def describe(self):
            return []

        def get(self, name: str) -> torch.Tensor:
            return torch.zeros(8 << 20)

    bob.serve("t", Big())
    # a fetch request for a name not offered is refused; the idle request read is bounded
    _, metadata = hostile.client.handshake("t", FETCH)
    stream = hostile.channel.stream_stream(FETCH)(iter(()), metadata=metadata, timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS  # no request message at all
    honest_push_works(alice, bob, "after")


def test_absurd_headers_get_invalid_argument(trio) -> None:
    alice, bob, hostile = trio
    absurd = [
        ("uint8", [0, 1 << 62, 4], 0),
        ("uint8", [0, (1 << 63) - 1], 0),
        ("float32", [-1], 4),
        ("complex128", [1], 16),
        ("float32", [1 << 31, 1 << 31], 1 << 64 - 2),
    ]
    for dtype, shape, nbytes in absurd:
        header = pb.TensorHeader(name="x", dtype=dtype, shape=shape, nbytes=nbytes, task="t")
        code = hostile.push_header(header)
        assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}, (
            dtype,
            shape,
            hostile.last_details,
        )
    assert bob.inbox.pending() == []
    honest_push_works(alice, bob, "after")


def test_inbox_flood_by_one_peer_leaves_room_for_others() -> None:
    alice = make_transport()
    bob = make_transport(max_inbox_peer_deliveries=5, max_inbox_bytes=64 << 20)
    mallory = Identity.generate()
    try:
        alice.peers.put(Peer("bob", bob.identity.public_key, f"127.0.0.1:{bob.port}"))
        bob.peers.put(Peer("alice", alice.identity.public_key))
        bob.peers.put(Peer("mallory", mallory.public_key))
        hostile = HostileClient(f"127.0.0.1:{bob.port}", bob.identity.public_key, mallory, "t")
        honest_push_works(alice, bob, "before")
        alice.send("bob", {"kept": torch.ones(3)}, "t", "kept")  # accepted before the flood
        codes = [hostile.push({"e": torch.zeros(0)}, f"tag{i}") for i in range(8)]
        assert codes == [grpc.StatusCode.OK] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert "MAX_INBOX_PEER_DELIVERIES" in (hostile.last_details or "")
        big = {"w": torch.zeros(12 << 20)}  # 48 MiB: the peer's share is half of 64 MiB
        assert hostile.push(big, "tag0") == grpc.StatusCode.RESOURCE_EXHAUSTED
        honest_push_works(alice, bob, "during")
        assert set(bob.receive("t", "kept", ["alice"], timeout=5)) == {"alice"}
        hostile.close()
    finally:
        alice.stop()
        bob.stop()


def test_raw_flood_of_idle_and_half_open_connections(trio) -> None:
    alice, bob, _ = trio
    address = f"127.0.0.1:{bob.port}"
    payload = half_open_call(address, HELLO, hello_metadata(alice.identity.public_key, "t"))
    floods = [Flood(address, 100).start(), Flood(address, 100, payload).start()]
    try:
        with contextlib.suppress(WaitTimeout):  # a flood the server holds off stays short
            wait_until(
                lambda: all(f.opened >= f.count for f in floods),
                timeout_s=10,
                interval_s=0.05,
                what="the floods to open",
            )
        for i in range(5):
            honest_push_works(alice, bob, f"flood{i}")
    finally:
        for flood in floods:
            flood.stop()
    assert threading.active_count() < 100


def test_watchdog_watch_fires_once_the_condition_holds() -> None:
    dog = Watchdog()
    flag = threading.Event()
    fired: list[int] = []
    dog.watch(flag.is_set, lambda: fired.append(1))
    kept = dog.watch(flag.is_set, lambda: fired.append(2))
    dog.unwatch(kept)
    assert dog.fire_expired() == 0
    flag.set()
    assert dog.fire_expired() == 1 and fired == [1]


def test_a_fetch_in_progress_ends_when_cancelled(trio) -> None:
    alice, bob, _ = trio
    release = threading.Event()

    class Stuck:
        def describe(self):
            return [TensorMeta("w", torch.float32, (2,))]

        def get(self, name: str) -> torch.Tensor:
            release.wait(30)
            return torch.zeros(2)

    alice.serve("t", Stuck())
    bob.peers.put(Peer("alice", alice.identity.public_key, f"127.0.0.1:{alice.port}"))
    alice.peers.put(Peer("bob", bob.identity.public_key, f"127.0.0.1:{bob.port}"))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    try:
        with pytest.raises(FetchCancelled):
            bob.fetch("alice", "t", ["w"], timeout=30, cancel=cancel)
    finally:
        release.set()
