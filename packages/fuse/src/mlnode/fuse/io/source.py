"""`TensorSource`: what the executor reads a model through, wherever the model lies."""

from __future__ import annotations

from typing import Protocol

import torch

from mlnode.common.transport.api import TensorMeta


class TensorSource(Protocol):
    """A model's tensors, read one at a time."""

    @property
    def label(self) -> str:
        """Names the source in messages (a path or a peer id)."""
        ...

    def describe(self) -> dict[str, TensorMeta]:
        """Every tensor's dtype and shape, by name."""
        ...

    def get(self, name: str) -> torch.Tensor:
        """One tensor, freshly loaded."""
        ...

    def close(self) -> None:
        """Release open files or connections."""
        ...
