"""Verified tensors pushed by peers, waiting for `receive(task, tag, ...)`."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

import torch

from mlnode.common.transport.api import ReceivedTensors
from mlnode.common.transport.errors import LimitExceeded


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


class Inbox:
    """Thread-safe mailboxes keyed by (task, tag), each holding one delivery per peer.

    `max_bytes` (0: no limit) bounds what waiting deliveries and transfers in progress hold.
    """

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._boxes: dict[tuple[str, str], dict[str, dict[str, torch.Tensor]]] = {}
        self._held = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of waiting deliveries and reservations of transfers in progress."""
        with self._cond:
            return self._held

    def reserve(self, nbytes: int) -> None:
        """Count `nbytes` of an incoming transfer; LimitExceeded when over the budget."""
        with self._cond:
            if self.max_bytes and self._held + nbytes > self.max_bytes:
                raise LimitExceeded(
                    f"inbox holds {self._held} bytes; {nbytes} more would pass its limit of "
                    f"{self.max_bytes} (MLNODE_GRPC_MAX_INBOX_BYTES)"
                )
            self._held += nbytes

    def release(self, nbytes: int) -> None:
        """Give back a reservation."""
        with self._cond:
            self._held -= nbytes

    def put(self, task: str, tag: str, peer_id: str, tensors: dict[str, torch.Tensor]) -> None:
        """Deliver a peer's verified tensors; a later delivery under the same key replaces it."""
        with self._cond:
            box = self._boxes.setdefault((task, tag), {})
            replaced = box.get(peer_id)
            self._held += _nbytes(tensors) - (_nbytes(replaced) if replaced else 0)
            box[peer_id] = tensors
            self._cond.notify_all()

    def take(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        """Wait until every peer in `from_peers` delivered or `timeout` passed; take what came."""
        wanted = set(from_peers)
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                box = self._boxes.get((task, tag), {})
                remaining = deadline - time.monotonic()
                if wanted <= box.keys() or remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = {peer: box.pop(peer) for peer in wanted & box.keys()}
            self._held -= sum(_nbytes(t) for t in taken.values())
            if not box:
                self._boxes.pop((task, tag), None)
            return taken

    def discard(self, task: str) -> None:
        """Drop every undelivered tensor of a task (its job ended)."""
        with self._cond:
            for key in [k for k in self._boxes if k[0] == task]:
                self._held -= sum(_nbytes(t) for t in self._boxes.pop(key).values())

    def pending(self) -> list[tuple[str, str, str, dict[str, torch.Tensor]]]:
        """(task, tag, peer id, tensors) of every delivery still waiting, without taking it."""
        with self._cond:
            return [
                (task, tag, peer, dict(tensors))
                for (task, tag), box in sorted(self._boxes.items())
                for peer, tensors in sorted(box.items())
            ]
