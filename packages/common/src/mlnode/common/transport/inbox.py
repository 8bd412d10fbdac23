"""Verified tensors pushed by peers, waiting for `receive(task, tag, ...)`."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

import torch

from mlnode.common.transport.api import ReceivedTensors


class Inbox:
    """Thread-safe mailboxes keyed by (task, tag), each holding one delivery per peer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._boxes: dict[tuple[str, str], dict[str, dict[str, torch.Tensor]]] = {}

    def put(self, task: str, tag: str, peer_id: str, tensors: dict[str, torch.Tensor]) -> None:
        """Deliver a peer's verified tensors; a later delivery under the same key replaces it."""
        with self._cond:
            self._boxes.setdefault((task, tag), {})[peer_id] = tensors
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
            if not box:
                self._boxes.pop((task, tag), None)
            return taken

    def discard(self, task: str) -> None:
        """Drop every undelivered tensor of a task (its job ended)."""
        with self._cond:
            for key in [k for k in self._boxes if k[0] == task]:
                del self._boxes[key]

    def pending(self) -> dict[tuple[str, str], list[str]]:
        """Which peers have deliveries waiting, per (task, tag)."""
        with self._cond:
            return {key: sorted(box) for key, box in self._boxes.items()}
