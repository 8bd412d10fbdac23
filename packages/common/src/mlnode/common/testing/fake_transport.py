"""In-memory `TensorTransport` for unit tests of train and fuse (no grpc, no keys).

Nodes made from one `TransportHub` reach each other by peer id. Tensors pass through the real
codec (same dtypes, same copies as the wire), pushes land in a real `Inbox`, and the hub can take
a peer offline to test what survivors do.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence

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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, FakeTransport] = {}
        self._offline: set[str] = set()

    def node(self, peer_id: str) -> FakeTransport:
        """The node named `peer_id` (created on first use)."""
        with self._lock:
            return self._nodes.setdefault(peer_id, FakeTransport(self, peer_id))

    def set_offline(self, peer_id: str, offline: bool = True) -> None:
        """Calls to an offline node fail with PeerUnreachable."""
        with self._lock:
            (self._offline.add if offline else self._offline.discard)(peer_id)

    def reach(self, peer_id: str) -> FakeTransport:
        """The node a call to `peer_id` lands on."""
        with self._lock:
            if peer_id in self._offline:
                raise PeerUnreachable(f"peer {peer_id} is offline")
            node = self._nodes.get(peer_id)
        if node is None:
            raise PeerUnknown(f"peer {peer_id!r} is not a known peer")
        return node


class FakeTransport:
    """One node of a `TransportHub`; implements `TensorTransport`."""

    def __init__(self, hub: TransportHub, peer_id: str) -> None:
        self.hub = hub
        self.peer_id = peer_id
        self.inbox = Inbox()
        self.providers = Providers()
        self.sent: list[tuple[str, str, str, list[str]]] = []

    def send(self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str) -> None:
        """Deliver copies of `tensors` into the peer's inbox."""
        copies = {name: wire_copy(name, t) for name, t in tensors.items()}
        self.hub.reach(peer_id).inbox.put(task, tag, self.peer_id, copies)
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
        return list(self.hub.reach(peer_id).providers.get(task).describe())

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
        provider = self.hub.reach(peer_id).providers.get(task)
        offered = {m.name for m in provider.describe()}
        missing = [n for n in names if n not in offered]
        if missing:
            raise NotOffered(f"not offered for task {task!r}: {missing}")
        got = {name: wire_copy(name, provider.get(name)) for name in names}
        check_as_listed(peer_id, got, expected)
        return got
