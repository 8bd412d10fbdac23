"""Models pulled from peers over the transport, and local models offered to peers."""

from __future__ import annotations

import threading

import torch

from mlnode.common.transport.api import TensorMeta, TensorTransport
from mlnode.fuse.io.local import LocalSafetensors
from mlnode.fuse.io.st_format import tensor_nbytes


class PeerSource:
    """A peer's shared model for one task, pulled one tensor at a time.

    Every call has a deadline: `timeout_s` for the listing, and `timeout_s` plus the tensor's
    listed size at `min_bytes_per_s` for each fetch, so a peer that drips data fails the fusion
    instead of hanging it. Each fetched header must match the listing before anything is
    allocated, so a small announcement cannot bring a large tensor.
    """

    def __init__(
        self,
        transport: TensorTransport,
        peer_id: str,
        task: str,
        timeout_s: float = 30.0,
        min_bytes_per_s: float = float(1 << 20),
    ) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.task = task
        self.timeout_s = timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.cancelled = threading.Event()
        listing = transport.list_tensors(peer_id, task, timeout=timeout_s)
        self._metas = {m.name: m for m in listing}

    @property
    def label(self) -> str:
        """Names the peer."""
        return f"peer {self.peer_id}"

    def describe(self) -> dict[str, TensorMeta]:
        """What the peer offers, as it announced it."""
        return dict(self._metas)

    def get(self, name: str) -> torch.Tensor:
        """Pull one tensor, refused unless it is what the peer announced."""
        meta = self._metas[name]
        timeout = self.timeout_s + tensor_nbytes(meta.dtype, meta.shape) / self.min_bytes_per_s
        tensor = self.transport.fetch(
            self.peer_id,
            self.task,
            [name],
            expected={name: meta},
            timeout=timeout,
            cancel=self.cancelled,
        )[name]
        if tensor.dtype != meta.dtype or tuple(tensor.shape) != meta.shape:
            raise ValueError(
                f"{self.label} sent {name} as {tensor.dtype} {tuple(tensor.shape)}, "
                f"announced {meta.dtype} {meta.shape}"
            )
        return tensor

    def cancel(self) -> None:
        """End the fetch in progress, and refuse further ones (the fusion was stopped)."""
        self.cancelled.set()

    def close(self) -> None:
        """Nothing to release: the transport outlives the source."""


class SharedModel:
    """A `TensorProvider` over a local checkpoint, for `TensorTransport.serve`."""

    def __init__(self, model: LocalSafetensors) -> None:
        self.model = model

    def describe(self) -> list[TensorMeta]:
        """Every tensor of the checkpoint."""
        return list(self.model.describe().values())

    def get(self, name: str) -> torch.Tensor:
        """One tensor; KeyError for names the checkpoint does not hold."""
        if not self.model.has(name):
            raise KeyError(name)
        return self.model.get(name)
