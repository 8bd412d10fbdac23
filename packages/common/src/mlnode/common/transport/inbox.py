"""Verified tensors pushed by peers, waiting for `receive(task, tag, ...)`.

Bounded by default (`InboxLimits`): bytes per node, task and peer (transfers in progress
included), waiting deliveries per task and peer, and a time to live after which a delivery no
service took is dropped. A full inbox refuses with `LimitExceeded` (RESOURCE_EXHAUSTED on the
wire) and keeps what it accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from mlnode.common.transport.api import ReceivedTensors
from mlnode.common.transport.inbox_budget import InboxBudget, InboxLimits, charge

log = logging.getLogger(__name__)


@dataclass
class _Delivery:
    tensors: dict[str, torch.Tensor]
    charged: int
    expires: float


def default_limits() -> InboxLimits:
    """The budgets of `TransportSettings`' defaults (without reading the environment)."""
    from mlnode.common.transport.settings import TransportSettings

    return TransportSettings.model_construct().inbox_limits()


class Inbox:
    """Thread-safe mailboxes keyed by (task, tag), each holding one delivery per peer."""

    def __init__(
        self, limits: InboxLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or default_limits()
        self._budget = InboxBudget(self.limits)
        self._clock = clock
        self._cond = threading.Condition()
        self._boxes: dict[tuple[str, str], dict[str, _Delivery]] = {}
        self._next_expiry = float("inf")

    @property
    def held_bytes(self) -> int:
        """Bytes charged to waiting deliveries and reservations of transfers in progress."""
        with self._cond:
            return self._budget.total

    def reserve(self, task: str, peer_id: str, nbytes: int) -> None:
        """Count `nbytes` of an incoming transfer; LimitExceeded when over a budget."""
        with self._cond:
            self._expire()
            self._budget.check_bytes(task, peer_id, nbytes)
            self._budget.add(task, peer_id, nbytes)

    def release(self, task: str, peer_id: str, nbytes: int) -> None:
        """Give back a reservation."""
        with self._cond:
            self._budget.add(task, peer_id, -nbytes)

    def put(self, task: str, tag: str, peer_id: str, tensors: dict[str, torch.Tensor]) -> None:
        """Deliver a peer's verified tensors; a later delivery under the same key replaces it.

        LimitExceeded (nothing changes) when the delivery is over a budget.
        """
        charged = charge(tensors)
        with self._cond:
            self._expire()
            box = self._boxes.get((task, tag), {})
            replaced = box.get(peer_id)
            if replaced is None:
                self._budget.check_delivery(task, peer_id)
            self._budget.check_bytes(task, peer_id, charged - (replaced.charged if replaced else 0))
            if replaced is not None:
                self._budget.add(task, peer_id, -replaced.charged, -1)
            self._budget.add(task, peer_id, charged, 1)
            expires = self._clock() + self.limits.ttl_s
            box[peer_id] = _Delivery(tensors, charged, expires)
            self._next_expiry = min(self._next_expiry, expires)
            self._boxes[(task, tag)] = box
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
            taken = {peer: self._pop(task, tag, peer).tensors for peer in wanted & box.keys()}
            return taken

    def _pop(self, task: str, tag: str, peer_id: str) -> _Delivery:
        box = self._boxes[(task, tag)]
        delivery = box.pop(peer_id)
        if not box:
            del self._boxes[(task, tag)]
        self._budget.add(task, peer_id, -delivery.charged, -1)
        return delivery

    def discard(self, task: str) -> None:
        """Drop every undelivered tensor of a task (its job ended)."""
        with self._cond:
            for t, tag in [k for k in self._boxes if k[0] == task]:
                for peer in list(self._boxes[(t, tag)]):
                    self._pop(t, tag, peer)

    def expire(self) -> int:
        """Drop deliveries whose time to live passed; how many were dropped."""
        with self._cond:
            return self._expire()

    def _expire(self) -> int:
        now = self._clock()
        if now < self._next_expiry:
            return 0
        stale = [
            (task, tag, peer)
            for (task, tag), box in self._boxes.items()
            for peer, delivery in box.items()
            if delivery.expires <= now
        ]
        self._next_expiry = min(
            (d.expires for box in self._boxes.values() for d in box.values() if d.expires > now),
            default=float("inf"),
        )
        for task, tag, peer in stale:
            self._pop(task, tag, peer)
            log.warning(
                "dropped %s's delivery %r of task %r: no service took it within %.0f s "
                "(MLNODE_GRPC_INBOX_TTL_S)",
                peer,
                tag,
                task,
                self.limits.ttl_s,
            )
        return len(stale)

    def pending(self) -> list[tuple[str, str, str, dict[str, torch.Tensor]]]:
        """(task, tag, peer id, tensors) of every delivery still waiting, without taking it."""
        with self._cond:
            self._expire()
            return [
                (task, tag, peer, dict(delivery.tensors))
                for (task, tag), box in sorted(self._boxes.items())
                for peer, delivery in sorted(box.items())
            ]
