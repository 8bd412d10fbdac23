"""The rate floor on transfers and the pool's reserved share, alone and on a real server."""

import threading
import time

import grpc
import pytest
import torch

from mlnode.common.testing.hostile import HostileClient
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.errors import LimitExceeded
from mlnode.common.transport.peers import Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.watchdog import PeerSlots, RateFloor

from .conftest import make_transport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_floor_judges_whole_windows_of_the_peers_time() -> None:
    clock = Clock()
    meter = RateFloor(floor=100, window_s=2, clock=clock)
    meter.wait_begins()
    clock.now = 1.5
    assert not meter.too_slow()  # not a whole window yet
    meter.wait_ends(300)
    clock.now = 10.0  # our own time (producing, checking) is not the peer's
    assert not meter.too_slow()
    meter.wait_begins()
    clock.now = 10.5
    assert not meter.too_slow()  # 2 s of peer time moved 300 bytes: 150 B/s, a new window begins
    clock.now = 12.4
    assert not meter.too_slow()
    clock.now = 12.6
    assert meter.too_slow() and meter.slow_bytes == 0


def test_a_floor_of_a_fast_peer_never_trips() -> None:
    clock = Clock()
    meter = RateFloor(floor=100, window_s=1, clock=clock)
    for _ in range(50):
        meter.wait_begins()
        clock.now += 0.1
        meter.wait_ends(20)  # 200 B/s
        assert not meter.too_slow()


def test_the_last_threads_go_to_peers_without_a_call() -> None:
    slots = PeerSlots(limit=3, pool=6, reserved=2)
    for peer in ("a", "a", "b", "b"):
        slots.acquire(peer)
    with pytest.raises(LimitExceeded, match="RESERVED_WORKERS"):
        slots.acquire("a")  # 4 of 6 taken: only the reserved 2 are free
    slots.acquire("c")
    slots.acquire("d")
    assert slots.open_calls() == 6
    slots.acquire("e")  # a first call past the pool waits for a thread, it is not refused
    with pytest.raises(LimitExceeded, match="RESERVED_WORKERS"):
        slots.acquire("c")
    one = PeerSlots(limit=1, pool=6, reserved=2)
    one.acquire("x")
    with pytest.raises(LimitExceeded, match="MAX_CALLS_PER_PEER"):
        one.acquire("x")
    slots.release("a")
    slots.release("b")
    assert slots.open_calls("a") == 1 and slots.open_calls() == 5


def test_the_reserve_must_leave_threads_to_share() -> None:
    with pytest.raises(ValueError, match="RESERVED_WORKERS"):
        TransportSettings(workers=4, reserved_workers=4)
    assert TransportSettings(workers=16).reserved() == 4


def test_a_dripping_push_is_cut_and_an_honest_push_goes_through() -> None:
    alice = make_transport()
    bob = make_transport(
        workers=4, max_calls_per_peer=2, idle_timeout_s=5.0, min_bytes_per_s=500, rate_window_s=1.0
    )
    mallory = Identity.generate()
    alice.peers.put(Peer("bob", bob.identity.public_key, f"127.0.0.1:{bob.port}"))
    bob.peers.put(Peer("alice", alice.identity.public_key, tasks=frozenset({"t"})))
    bob.peers.put(Peer("mallory", mallory.public_key, tasks=frozenset({"t"})))
    hostile = HostileClient(f"127.0.0.1:{bob.port}", bob.identity.public_key, mallory, "t")
    codes: list[grpc.StatusCode] = []
    started = time.monotonic()
    drips = [
        threading.Thread(target=lambda: codes.append(hostile.drip(every_s=0.2))) for _ in range(2)
    ]
    try:
        for drip in drips:
            drip.start()
        time.sleep(0.3)
        alice.send("bob", {"x": torch.arange(1000.0)}, "t", "honest")
        got = bob.receive("t", "honest", ["alice"], timeout=10)
        assert torch.equal(got["alice"]["x"], torch.arange(1000.0))
        for drip in drips:
            drip.join(20)
        assert codes == [grpc.StatusCode.CANCELLED] * 2
        assert time.monotonic() - started < 5  # cut at the 1 s window, not the idle deadline
    finally:
        hostile.close()
        alice.stop()
        bob.stop()
