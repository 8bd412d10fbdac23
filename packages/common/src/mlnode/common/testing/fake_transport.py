"""In-memory `TensorTransport` for unit tests and benchmarks of every package: no grpc, no keys.

Nodes made from one `TransportHub` reach each other by peer id (a node is made on first use, by
`hub.node(peer_id)` or by a call to it). Tensors pass through the real
codec (same dtypes, same copies as the wire), pushes land in a real `Inbox`, providers sit in the
real `Providers` registry (`DictProvider` offers a dict of tensors). Faults a test can drive:

- `hub.set_offline(peer)`: calls to the peer fail with `PeerUnreachable`; it keeps what it held.
- `hub.kill(peer)` / `hub.revive(peer)`: a dead peer is unreachable, cannot call out either, and
  loses its inbox and providers, as a crashed process does; revived, it starts empty.
- `node.lose = lambda peer, tag: ...`: pushes it matches vanish on the way, as on a lossy link.
- `TransportHub(registered_only=True)`: a node reaches only existing peers in its `known` set that
  also know it (the real transport's registered keys); otherwise `PeerUnknown`, or
  `NotAuthenticated` (the peer refuses an unknown key).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence

import torch

from mlnode.common.errors import PeerUnknown
from mlnode.common.transport.api import (
    ReceivedTensors,
    TensorLike,
    TensorMeta,
    TensorProvider,
    check_as_listed,
)
from mlnode.common.transport.codec import CodecError, TensorBuffer, encode
from mlnode.common.transport.errors import (
    FetchCancelled,
    LimitExceeded,
    NotAuthenticated,
    NotOffered,
    PeerUnreachable,
)
from mlnode.common.transport.handlers import Providers
from mlnode.common.transport.inbox import Inbox


def wire_copy(name: str, tensor: TensorLike) -> torch.Tensor:
    """What the receiver of `tensor` gets: a CPU torch tensor decoded from its wire bytes."""
    try:
        encoded = encode(name, tensor)
    except CodecError as exc:
        raise LimitExceeded(str(exc)) from None
    buffer = TensorBuffer(encoded.dtype, encoded.shape, encoded.nbytes)
    buffer.write(encoded.payload.tobytes())
    return buffer.finish()


class TransportHub:
    """A set of in-memory nodes that can reach each other."""

    def __init__(self, registered_only: bool = False) -> None:
        """Nodes reach every other node, or with `registered_only` only mutually known ones."""
        self.registered_only = registered_only
        self._lock = threading.Lock()
        self._nodes: dict[str, FakeTransport] = {}
        self._offline: set[str] = set()
        self._dead: set[str] = set()

    def node(self, peer_id: str) -> FakeTransport:
        """The node named `peer_id` (created on first use)."""
        with self._lock:
            node = self._nodes.get(peer_id)
        return node if node is not None else FakeTransport(self, peer_id)

    #: The name train's tests and benchmark knew the hub's nodes by.
    transport = node

    def attach(self, node: FakeTransport) -> None:
        """Make `node` the one its peer id reaches (a node joins its hub when built)."""
        with self._lock:
            self._nodes[node.peer_id] = node

    def set_offline(self, peer_id: str, offline: bool = True) -> None:
        """Calls to an offline node fail with PeerUnreachable."""
        with self._lock:
            (self._offline.add if offline else self._offline.discard)(peer_id)

    def kill(self, peer_id: str) -> None:
        """The node crashes: unreachable, unable to call out, its inbox and providers gone."""
        with self._lock:
            self._dead.add(peer_id)
            node = self._nodes.get(peer_id)
        if node is not None:
            node.inbox, node.providers = Inbox(), Providers()

    def revive(self, peer_id: str) -> None:
        """A killed node is back, with an empty inbox and nothing served."""
        with self._lock:
            self._dead.discard(peer_id)

    def check_alive(self, peer_id: str) -> None:
        """PeerUnreachable when `peer_id` was killed and not revived."""
        with self._lock:
            if peer_id in self._dead:
                raise PeerUnreachable(f"peer {peer_id} is down")

    def reach(self, caller: str, peer_id: str) -> FakeTransport:
        """The node a call from `caller` to `peer_id` lands on."""
        self.check_alive(caller)
        with self._lock:
            if peer_id in self._offline or peer_id in self._dead:
                raise PeerUnreachable(f"peer {peer_id} is not reachable from {caller}")
            node = self._nodes.get(peer_id)
            me = self._nodes.get(caller)
        if not self.registered_only:
            return node if node is not None else self.node(peer_id)
        if node is None or me is None or peer_id not in me.known:
            raise PeerUnknown(f"peer {peer_id!r} is not a known peer of {caller}")
        if caller not in node.known:
            raise NotAuthenticated(f"{peer_id} does not know {caller}")
        return node


class FakeTransport:
    """One node of a `TransportHub`; implements `TensorTransport` and joins the hub when built."""

    def __init__(self, hub: TransportHub, peer_id: str) -> None:
        """A node named `peer_id` with an empty inbox, reachable through `hub`."""
        self.hub = hub
        self.peer_id = peer_id
        self.inbox = Inbox()
        self.providers = Providers()
        #: Peers whose keys this node registered (checked when the hub is `registered_only`).
        self.known: set[str] = set()
        #: Pushes for which `lose(peer_id, tag)` is true vanish on the way.
        self.lose: Callable[[str, str], bool] | None = None
        self.sent: list[tuple[str, str, str, list[str]]] = []
        self.fetched: list[tuple[str, str, list[str]]] = []
        hub.attach(self)

    def send(self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str) -> None:
        """Deliver copies of `tensors` into the peer's inbox."""
        copies = {name: wire_copy(name, t) for name, t in tensors.items()}
        target = self.hub.reach(self.peer_id, peer_id)
        if self.lose is None or not self.lose(peer_id, tag):
            target.inbox.put(task, tag, self.peer_id, copies)
        self.sent.append((peer_id, task, tag, list(copies)))

    def receive(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        """Wait for `from_peers` under (task, tag) until `timeout`; late peers are absent."""
        return self.inbox.take(task, tag, from_peers, timeout)

    def serve(self, task: str, provider: TensorProvider) -> None:
        """Offer a provider's tensors for `task`."""
        self.providers.set(task, provider)

    def unserve(self, task: str) -> None:
        """Stop offering tensors for `task`."""
        self.providers.remove(task)

    def list_tensors(
        self, peer_id: str, task: str, *, timeout: float | None = None
    ) -> list[TensorMeta]:
        """What the peer offers for `task`."""
        return list(self.hub.reach(self.peer_id, peer_id).providers.get(task).describe())

    def fetch(
        self,
        peer_id: str,
        task: str,
        names: Sequence[str],
        *,
        expected: Mapping[str, TensorMeta] | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, torch.Tensor]:
        """Copies of the named tensors of the peer's provider for `task` (as `expected`)."""
        if cancel is not None and cancel.is_set():
            raise FetchCancelled(f"fetch from peer {peer_id} cancelled")
        provider = self.hub.reach(self.peer_id, peer_id).providers.get(task)
        offered = {m.name for m in provider.describe()}
        missing = [n for n in names if n not in offered]
        if missing:
            raise NotOffered(f"not offered for task {task!r}: {missing}")
        self.fetched.append((peer_id, task, list(names)))
        got = {name: wire_copy(name, provider.get(name)) for name in names}
        check_as_listed(peer_id, got, expected)
        return got


class DictProvider:
    """A `TensorProvider` that offers the tensors it is given, as they are."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def describe(self) -> list[TensorMeta]:
        """Each tensor's name, dtype and shape."""
        return [TensorMeta(n, t.dtype, tuple(t.shape)) for n, t in self.tensors.items()]

    def get(self, name: str) -> torch.Tensor:
        """The tensor itself (the transport copies what it sends)."""
        return self.tensors[name]
