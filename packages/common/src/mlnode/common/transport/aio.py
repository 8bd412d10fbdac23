"""`AsyncTransport`: awaitable versions of a `TensorTransport`'s methods, for event-loop code.

Each call runs the blocking method in a worker thread (`asyncio.to_thread`), so the loop never
waits on the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

import torch

from mlnode.common.transport.api import (
    ReceivedTensors,
    TensorLike,
    TensorMeta,
    TensorProvider,
    TensorTransport,
)


class AsyncTransport:
    """Wraps a blocking transport; `await transport.receive(...)` and friends."""

    def __init__(self, transport: TensorTransport) -> None:
        self.transport = transport

    async def send(
        self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str
    ) -> None:
        """Deliver tensors to a peer's inbox under (task, tag)."""
        await asyncio.to_thread(self.transport.send, peer_id, tensors, task, tag)

    async def receive(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        """What `from_peers` delivered under (task, tag) by `timeout`; late peers are absent."""
        return await asyncio.to_thread(self.transport.receive, task, tag, from_peers, timeout)

    def serve(self, task: str, provider: TensorProvider) -> None:
        """Offer a provider's tensors for `task` (does not block)."""
        self.transport.serve(task, provider)

    def unserve(self, task: str) -> None:
        """Stop offering tensors for `task` (does not block)."""
        self.transport.unserve(task)

    async def list_tensors(self, peer_id: str, task: str) -> list[TensorMeta]:
        """What a peer offers for `task`."""
        return await asyncio.to_thread(self.transport.list_tensors, peer_id, task)

    async def fetch(self, peer_id: str, task: str, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pull named tensors from a peer's provider for `task`."""
        return await asyncio.to_thread(self.transport.fetch, peer_id, task, names)
