"""What the inbox may hold: bytes and deliveries per node, per task and per peer.

Pure accounting, no locking (the inbox holds its lock around every call). Each tensor is
charged its payload plus `TENSOR_OVERHEAD`, so empty tensors are not free; each delivery counts
once, whatever its size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mlnode.common.transport.errors import LimitExceeded

#: Bytes charged per tensor besides its payload: the tensor object, its name, the dict slot.
TENSOR_OVERHEAD = 1024


def charge(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes a delivery is charged."""
    return sum(t.numel() * t.element_size() + TENSOR_OVERHEAD for t in tensors.values())


@dataclass(frozen=True)
class InboxLimits:
    """The inbox's budgets; every field is a hard limit."""

    total_bytes: int
    peer_bytes: int
    task_bytes: int
    peer_deliveries: int
    task_deliveries: int
    ttl_s: float


class InboxBudget:
    """Bytes (deliveries and transfers in progress) and deliveries in use, by scope."""

    def __init__(self, limits: InboxLimits) -> None:
        self.limits = limits
        self.total = 0
        self.task_bytes: Counter[str] = Counter()
        self.peer_bytes: Counter[str] = Counter()
        self.task_deliveries: Counter[str] = Counter()
        self.peer_deliveries: Counter[str] = Counter()

    def check_bytes(self, task: str, peer: str, nbytes: int) -> None:
        """LimitExceeded when `nbytes` more for (task, peer) would pass a byte budget."""
        if nbytes <= 0:
            return
        lim = self.limits
        for used, limit, scope, setting in (
            (self.peer_bytes[peer], lim.peer_bytes, f"peer {peer}", "PEER_BYTES"),
            (self.task_bytes[task], lim.task_bytes, f"task {task!r}", "TASK_BYTES"),
            (self.total, lim.total_bytes, "the node", "BYTES"),
        ):
            if used + nbytes > limit:
                raise LimitExceeded(
                    f"inbox full: {scope} holds {used} bytes, {nbytes} more would pass its "
                    f"limit of {limit} (MLNODE_GRPC_MAX_INBOX_{setting})"
                )

    def check_delivery(self, task: str, peer: str) -> None:
        """LimitExceeded when one more waiting delivery for (task, peer) is over a count."""
        lim = self.limits
        if self.peer_deliveries[peer] >= lim.peer_deliveries:
            raise LimitExceeded(
                f"inbox full: peer {peer} has {lim.peer_deliveries} deliveries waiting "
                "(MLNODE_GRPC_MAX_INBOX_PEER_DELIVERIES)"
            )
        if self.task_deliveries[task] >= lim.task_deliveries:
            raise LimitExceeded(
                f"inbox full: task {task!r} has {lim.task_deliveries} deliveries waiting "
                "(MLNODE_GRPC_MAX_INBOX_TASK_DELIVERIES)"
            )

    def add(self, task: str, peer: str, nbytes: int, deliveries: int = 0) -> None:
        """Count bytes and deliveries (negative to give them back)."""
        self.total += nbytes
        self.task_bytes[task] += nbytes
        self.peer_bytes[peer] += nbytes
        self.task_deliveries[task] += deliveries
        self.peer_deliveries[peer] += deliveries
        for counter in (
            self.task_bytes,
            self.peer_bytes,
            self.task_deliveries,
            self.peer_deliveries,
        ):
            for key in (task, peer):
                if counter.get(key) == 0:
                    del counter[key]
