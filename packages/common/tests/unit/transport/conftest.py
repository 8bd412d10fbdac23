"""Two real in-process transports on loopback: `alice` sends, `bob` receives (task "t")."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mlnode.common.transport.auth import Identity
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport


@dataclass
class Pair:
    alice: GrpcTransport
    bob: GrpcTransport

    def bob_peer(self) -> Peer:
        peer = self.alice.peers.get("bob")
        assert peer is not None
        return peer


def make_transport(**overrides: object) -> GrpcTransport:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "chunk_bytes": 64 * 1024,
        **overrides,
    }
    transport = GrpcTransport(
        TransportSettings(**options), identity=Identity.generate(), peers=KnownPeers()
    )
    transport.start()
    return transport


def make_pair(alice: dict[str, Any] | None = None, bob: dict[str, Any] | None = None) -> Pair:
    """Alice sends to bob (task "t"); each takes its settings' overrides."""
    bob_limits = {"max_tensor_bytes": 32 << 20, "max_tensors": 64, "max_header_bytes": 4096}
    return _connect(make_transport(**(alice or {})), make_transport(**bob_limits | (bob or {})))


def _connect(alice: GrpcTransport, bob: GrpcTransport) -> Pair:
    alice.peers.put(Peer("bob", bob.identity.public_key, f"127.0.0.1:{bob.port}"))
    bob.peers.put(
        Peer("alice", alice.identity.public_key, f"127.0.0.1:{alice.port}", frozenset({"t"}))
    )
    return Pair(alice, bob)


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = make_pair()
    yield made
    made.alice.stop()
    made.bob.stop()


@pytest.fixture
def single_pushes() -> Iterator[Pair]:
    """A pair whose sender uses no push streams: one handshake and one `Push` call per send."""
    made = make_pair({"stream_pushes": 0})
    yield made
    made.alice.stop()
    made.bob.stop()


@pytest.fixture
def pairs() -> Iterator[Callable[..., Pair]]:
    """`make_pair`, with every pair it made stopped when the test ends."""
    made: list[Pair] = []

    def factory(alice: dict[str, Any] | None = None, bob: dict[str, Any] | None = None) -> Pair:
        made.append(make_pair(alice, bob))
        return made[-1]

    yield factory
    for each in made:
        each.alice.stop()
        each.bob.stop()
