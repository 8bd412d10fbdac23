"""Fixtures of the fusion unit tests: an in-memory transport between fake peers."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence

import pytest
import torch

from mlnode.common.errors import NotFound, PeerUnknown
from mlnode.common.transport.api import (
    ReceivedTensors,
    TensorLike,
    TensorMeta,
    TensorProvider,
    check_as_listed,
)


class FakeNetwork:
    """Fake transports by node id; each only talks to peers it knows and that know it."""

    def __init__(self) -> None:
        self.nodes: dict[str, FakeTransport] = {}

    def node(self, node_id: str) -> FakeTransport:
        self.nodes[node_id] = FakeTransport(self, node_id)
        return self.nodes[node_id]


class FakeTransport:
    """The pull side of `TensorTransport`, in memory; fetched tensors are copies."""

    def __init__(self, network: FakeNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id
        self.known: set[str] = set()
        self.served: dict[str, TensorProvider] = {}
        self.fetches = 0

    def _provider(self, peer_id: str, task: str) -> TensorProvider:
        if peer_id not in self.known:
            raise PeerUnknown(f"{peer_id} is not a known peer")
        peer = self.network.nodes[peer_id]
        if self.node_id not in peer.known:
            raise PeerUnknown(f"{peer_id} does not know {self.node_id}")
        if task not in peer.served:
            raise NotFound(f"{peer_id} serves nothing for {task}")
        return peer.served[task]

    def send(self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str) -> None:
        raise NotImplementedError

    def receive(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        raise NotImplementedError

    def serve(self, task: str, provider: TensorProvider) -> None:
        self.served[task] = provider

    def unserve(self, task: str) -> None:
        self.served.pop(task, None)

    def list_tensors(
        self, peer_id: str, task: str, *, timeout: float | None = None
    ) -> list[TensorMeta]:
        return self._provider(peer_id, task).describe()

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
        provider = self._provider(peer_id, task)
        self.fetches += len(names)
        got = {name: provider.get(name).clone() for name in names}
        check_as_listed(peer_id, got, expected)
        return got


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()
