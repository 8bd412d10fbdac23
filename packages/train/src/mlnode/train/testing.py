"""An in-process `TensorTransport` for several workers in one process (tests and benchmarks).

Workers share a `MemoryHub`; each gets a `MemoryTransport` under a name. Tensors are copied on
send, as a wire would. `MemoryHub.kill(name)` makes a worker unreachable (sends to it fail,
its inbox and provider vanish) to drive fault-tolerance tests.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mlnode.common.transport import ReceivedTensors, TensorMeta, TensorProvider
from mlnode.common.transport.api import TensorLike, check_as_listed

#: What the signed transport carries (it refuses other dtypes, so the hub does too).
WIRE_DTYPES = frozenset(
    {
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int8,
        torch.uint8,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)


class PeerDown(ConnectionError):
    """The peer is not reachable."""


class MemoryHub:
    """Inboxes and providers of every worker in the process."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.inboxes: dict[tuple[str, str, str], dict[str, dict[str, torch.Tensor]]] = {}
        self.providers: dict[tuple[str, str], TensorProvider] = {}
        self.down: set[str] = set()

    def transport(self, name: str) -> MemoryTransport:
        """The transport of worker `name`."""
        return MemoryTransport(self, name)

    def kill(self, name: str) -> None:
        """Make a worker unreachable and forget what it held."""
        with self.cond:
            self.down.add(name)
            self.inboxes = {k: v for k, v in self.inboxes.items() if k[0] != name}
            self.providers = {k: v for k, v in self.providers.items() if k[0] != name}
            self.cond.notify_all()

    def revive(self, name: str) -> None:
        """Make a worker reachable again (with empty inboxes)."""
        with self.cond:
            self.down.discard(name)


class MemoryTransport:
    """One worker's view of a `MemoryHub`; implements `TensorTransport`."""

    def __init__(self, hub: MemoryHub, name: str) -> None:
        self.hub = hub
        self.name = name

    def _check_up(self, peer: str) -> None:
        if peer in self.hub.down or self.name in self.hub.down:
            raise PeerDown(f"{peer} is not reachable from {self.name}")

    def send(self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str) -> None:
        """Copy tensors into the peer's inbox."""
        for name, value in tensors.items():
            dtype = (
                torch.from_numpy(np.asarray(value)).dtype
                if isinstance(value, np.ndarray)
                else value.dtype
            )
            if dtype not in WIRE_DTYPES:
                raise ValueError(f"dtype {dtype} of {name} cannot be sent")
        copies = {
            k: (torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v.detach().clone())
            for k, v in tensors.items()
        }
        with self.hub.cond:
            self._check_up(peer_id)
            self.hub.inboxes.setdefault((peer_id, task, tag), {})[self.name] = copies
            self.hub.cond.notify_all()

    def receive(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        """Wait for every peer in `from_peers` or the timeout; return (and remove) what arrived."""
        deadline = time.monotonic() + timeout
        key = (self.name, task, tag)
        with self.hub.cond:
            while True:
                box = self.hub.inboxes.get(key, {})
                if all(p in box for p in from_peers):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.hub.cond.wait(left)
            box = self.hub.inboxes.get(key, {})
            got = {p: box.pop(p) for p in list(box) if p in from_peers}
            if not box:
                self.hub.inboxes.pop(key, None)
            return got

    def serve(self, task: str, provider: TensorProvider) -> None:
        """Offer tensors to pulling peers."""
        with self.hub.cond:
            self.hub.providers[(self.name, task)] = provider

    def unserve(self, task: str) -> None:
        """Stop offering tensors."""
        with self.hub.cond:
            self.hub.providers.pop((self.name, task), None)

    def _provider(self, peer_id: str, task: str) -> TensorProvider:
        with self.hub.cond:
            self._check_up(peer_id)
            provider = self.hub.providers.get((peer_id, task))
        if provider is None:
            raise LookupError(f"{peer_id} serves nothing for task {task}")
        return provider

    def list_tensors(
        self, peer_id: str, task: str, *, timeout: float | None = None
    ) -> list[TensorMeta]:
        """What a peer offers."""
        return self._provider(peer_id, task).describe()

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
        """Copies of named tensors from a peer's provider (checked against `expected`)."""
        provider = self._provider(peer_id, task)
        got = {name: provider.get(name).detach().clone() for name in names}
        check_as_listed(peer_id, got, expected)
        return got


SUBJECTS = ("the cat", "a dog", "my friend", "the bird", "our teacher", "a child")
VERBS = ("sees", "likes", "finds", "eats", "draws", "brings")
OBJECTS = ("the ball.", "a red apple.", "the green book.", "some bread.", "a small box.")


def write_tiny_corpus(path: Path, sentences: int = 600, seed: int = 0) -> Path:
    """A small learnable text made locally: random sentences from a tiny grammar."""
    rng = random.Random(seed)
    lines = [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        for _ in range(sentences)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def follower_hashes(log_dir: Path) -> dict[int, str]:
    """The last weight hash each follower logged under `log_dir` (local rank -> sha256)."""
    found: dict[int, str] = {}
    for path in sorted(log_dir.glob("local-rank-*.log")):
        rank = int(path.stem.rsplit("-", 1)[1])
        hashes = re.findall(r"weights sha256 ([0-9a-f]{64})", path.read_text())
        if hashes:
            found[rank] = hashes[-1]
    return found
