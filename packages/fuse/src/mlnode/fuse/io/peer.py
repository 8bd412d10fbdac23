"""Models pulled from peers over the transport, and local models offered to peers."""

from __future__ import annotations

import torch

from mlnode.common.transport.api import TensorMeta, TensorTransport
from mlnode.fuse.io.local import LocalSafetensors


class PeerSource:
    """A peer's shared model for one task, pulled one tensor at a time."""

    def __init__(self, transport: TensorTransport, peer_id: str, task: str) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.task = task
        self._metas = {m.name: m for m in transport.list_tensors(peer_id, task)}

    @property
    def label(self) -> str:
        """Names the peer."""
        return f"peer {self.peer_id}"

    def describe(self) -> dict[str, TensorMeta]:
        """What the peer offers, as it announced it."""
        return dict(self._metas)

    def get(self, name: str) -> torch.Tensor:
        """Pull one tensor and check it is what the peer announced."""
        tensor = self.transport.fetch(self.peer_id, self.task, [name])[name]
        meta = self._metas[name]
        if tensor.dtype != meta.dtype or tuple(tensor.shape) != meta.shape:
            raise ValueError(
                f"{self.label} sent {name} as {tensor.dtype} {tuple(tensor.shape)}, "
                f"announced {meta.dtype} {meta.shape}"
            )
        return tensor

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
