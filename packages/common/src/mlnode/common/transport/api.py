"""What train and fuse see of the transport; no grpc here, so fakes can implement it.

Methods block and are thread-safe: training and fusion call them from worker threads.
Async callers wrap them in `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

TensorLike = torch.Tensor | np.ndarray

#: peer id -> {tensor name -> tensor}; peers that did not deliver in time are absent.
ReceivedTensors = dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TensorMeta:
    """Name, dtype and shape of a tensor a peer offers."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]


class TensorProvider(Protocol):
    """Tensors this node serves to pulling peers for one task."""

    def describe(self) -> list[TensorMeta]:
        """Every tensor on offer."""
        ...

    def get(self, name: str) -> torch.Tensor:
        """One tensor, loaded on demand; KeyError when not on offer."""
        ...


class TensorTransport(Protocol):
    """Push, receive and pull named tensors between known peers."""

    def send(self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str) -> None:
        """Deliver tensors to a peer's inbox under (task, tag); raises on refusal or failure."""
        ...

    def receive(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        """Wait until each peer in `from_peers` delivered under (task, tag), or until `timeout`.

        Returns what arrived; a peer that missed the deadline is absent, never an error.
        """
        ...

    def serve(self, task: str, provider: TensorProvider) -> None:
        """Offer a provider's tensors to known peers of `task` (replaces an earlier one)."""
        ...

    def unserve(self, task: str) -> None:
        """Stop offering tensors for `task`."""
        ...

    def list_tensors(self, peer_id: str, task: str) -> list[TensorMeta]:
        """What a peer offers for `task`."""
        ...

    def fetch(self, peer_id: str, task: str, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pull named tensors from a peer's provider for `task`."""
        ...
