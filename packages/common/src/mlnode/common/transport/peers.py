"""Known peers: whose keys this node accepts, for which tasks, and where they listen.

The network node sets them over REST. They are kept in the state dir as JSON and replaced
atomically. Each peer has an epoch that changes whenever its entry changes or goes away, so
sessions opened under an older entry end.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlnode.common.transport.auth import decode_public_key, encode_key

PEERS_FILE = "peers.json"
PEER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_ADDRESS_PATTERN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


class PeersFileError(RuntimeError):
    """The peers file exists but cannot be read; the node refuses to start with it."""


def check_peer_id(peer_id: str) -> str:
    """A peer id of 1-128 letters, digits and `._:@-`; ValueError otherwise."""
    if not PEER_ID_PATTERN.match(peer_id):
        raise ValueError("peer_id must be 1-128 characters of letters, digits and ._:@-")
    return peer_id


def check_address(address: str) -> str:
    """A `host:port` address; ValueError otherwise."""
    match = _ADDRESS_PATTERN.match(address)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"address {address!r} is not host:port")
    return address


@dataclass(frozen=True)
class Peer:
    """One known peer: its id, Ed25519 public key, optional address and tasks (None = any)."""

    peer_id: str
    public_key: bytes
    address: str | None = None
    tasks: frozenset[str] | None = None

    def allows(self, task: str) -> bool:
        """True when this peer may exchange tensors for `task`."""
        return self.tasks is None or task in self.tasks

    def to_json(self) -> dict[str, Any]:
        """The persisted (and REST) form."""
        return {
            "peer_id": self.peer_id,
            "public_key": encode_key(self.public_key),
            "address": self.address,
            "tasks": sorted(self.tasks) if self.tasks is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Peer:
        """Parse and check the persisted form; ValueError names the problem."""
        tasks = data.get("tasks")
        address = data.get("address")
        return cls(
            peer_id=check_peer_id(str(data["peer_id"])),
            public_key=decode_public_key(str(data["public_key"])),
            address=check_address(address) if address else None,
            tasks=frozenset(str(t) for t in tasks) if tasks is not None else None,
        )


class KnownPeers:
    """Thread-safe peer set, persisted to `path` (when given) after every change."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self._epochs: dict[str, int] = {}
        self._next_epoch = 1
        self._listeners: list[Callable[[], None]] = []
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self._install([Peer.from_json(p) for p in data["peers"]])
            except (ValueError, KeyError, TypeError) as exc:
                raise PeersFileError(f"{path} is not a valid peers file: {exc!r}") from exc

    def all(self) -> list[Peer]:
        """Every peer, by id."""
        with self._lock:
            return [self._peers[k] for k in sorted(self._peers)]

    def get(self, peer_id: str) -> Peer | None:
        """The peer with this id, if known."""
        with self._lock:
            return self._peers.get(peer_id)

    def by_key(self, public_key: bytes) -> tuple[Peer, int] | None:
        """The peer holding this key and its current epoch, if known."""
        with self._lock:
            for peer in self._peers.values():
                if peer.public_key == public_key:
                    return peer, self._epochs[peer.peer_id]
        return None

    def is_current(self, peer_id: str, epoch: int) -> bool:
        """False once the peer's entry changed or was removed after `epoch`."""
        with self._lock:
            return self._epochs.get(peer_id) == epoch

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change (it runs in the changing thread)."""
        with self._lock:
            self._listeners.append(listener)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def put(self, peer: Peer) -> None:
        """Add or replace one peer; ValueError when another peer holds the same key."""
        with self._lock:
            peers = {**self._peers, peer.peer_id: peer}
            self._commit(peers)
        self._notify()

    def replace(self, peers: Iterable[Peer]) -> None:
        """Replace the whole set at once; ValueError on duplicate ids or keys."""
        new: dict[str, Peer] = {}
        for peer in peers:
            if peer.peer_id in new:
                raise ValueError(f"peer_id {peer.peer_id!r} appears twice")
            new[peer.peer_id] = peer
        with self._lock:
            self._commit(new)
        self._notify()

    def remove(self, peer_id: str) -> bool:
        """Forget a peer (its open sessions end); False when it was not known."""
        with self._lock:
            if peer_id not in self._peers:
                return False
            self._commit({k: v for k, v in self._peers.items() if k != peer_id})
        self._notify()
        return True

    def _install(self, peers: list[Peer]) -> None:
        self._check_unique_keys(peers)
        self._peers = {p.peer_id: p for p in peers}
        self._epochs = {p.peer_id: self._bump() for p in peers}

    def _bump(self) -> int:
        epoch = self._next_epoch
        self._next_epoch += 1
        return epoch

    def _commit(self, peers: dict[str, Peer]) -> None:
        self._check_unique_keys(peers.values())
        self._save(peers)
        epochs = {}
        for peer_id, peer in peers.items():
            unchanged = self._peers.get(peer_id) == peer
            epochs[peer_id] = self._epochs[peer_id] if unchanged else self._bump()
        self._peers, self._epochs = dict(peers), epochs

    @staticmethod
    def _check_unique_keys(peers: Iterable[Peer]) -> None:
        owners: dict[bytes, str] = {}
        for peer in peers:
            other = owners.setdefault(peer.public_key, peer.peer_id)
            if other != peer.peer_id:
                raise ValueError(f"peers {other!r} and {peer.peer_id!r} have the same public_key")

    def _save(self, peers: dict[str, Peer]) -> None:
        if self._path is None:
            return
        body = json.dumps({"peers": [peers[k].to_json() for k in sorted(peers)]}, indent=2)
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".peers-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
