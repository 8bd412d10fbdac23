"""What train and fuse see of the transport; no grpc here, so fakes can implement it.

Methods block and are thread-safe: training and fusion call them from worker threads.
Async callers wrap them in `asyncio.to_thread`.
"""

from __future__ import annotations

import threading
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

    def list_tensors(
        self, peer_id: str, task: str, *, timeout: float | None = None
    ) -> list[TensorMeta]:
        """What a peer offers for `task`; `timeout` bounds the call (None: the transport's)."""
        ...

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
        """Pull named tensors from a peer's provider for `task`.

        With `expected`, every tensor must have the listed dtype and shape; a header that
        differs is refused before its memory is allocated. `timeout` bounds the whole call;
        setting `cancel` ends it early (an error).
        """
        ...


def check_as_listed(
    peer_id: str, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, TensorMeta] | None
) -> None:
    """ValueError unless each tensor has the dtype and shape `expected` lists (for fakes)."""
    for name, tensor in tensors.items() if expected is not None else ():
        meta = expected.get(name) if expected is not None else None
        if meta is None or (tensor.dtype, tuple(tensor.shape)) != (meta.dtype, meta.shape):
            raise ValueError(f"peer {peer_id} sent {name!r} other than listed")
