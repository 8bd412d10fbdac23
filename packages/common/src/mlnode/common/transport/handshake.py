"""The mutual handshake: fresh challenges from both sides, one-time use, bound to one call.

1. The client sends its key and task (metadata) and a fresh nonce. The server refuses an unknown
   key, or one not registered for the task, then answers with its key, its own fresh nonce and a
   signature over both nonces, both keys and the task.
2. The client checks that the answer is signed by the key of the peer it meant to reach.
3. The client opens its call with a signature over the same values plus the method name. The
   server consumes its pending challenge (so a recorded proof never works twice) and checks it.

Pure: no grpc.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlnode.common.transport import auth
from mlnode.common.transport.errors import ImpostorPeer, NotAuthenticated, SessionRevoked
from mlnode.common.transport.peers import KnownPeers, Peer


@dataclass(frozen=True)
class Session:
    """An authenticated call: the session id both sides sign with, the peer and its task."""

    id: bytes
    peer: Peer
    epoch: int
    task: str

    def check(self, peers: KnownPeers) -> None:
        """SessionRevoked once the peer's entry was removed or changed."""
        if not peers.is_current(self.peer.peer_id, self.epoch):
            raise SessionRevoked(f"peer {self.peer.peer_id} was removed or changed")


@dataclass(frozen=True)
class _Pending:
    client_key: bytes
    task: str
    client_nonce: bytes
    expires: float


class ServerHandshake:
    """Server side: admits keys, issues challenges and turns valid proofs into sessions."""

    def __init__(
        self,
        identity: auth.Identity,
        peers: KnownPeers,
        ttl_s: float,
        max_pending: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.peers = peers
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()

    def admit(self, client_key: bytes, task: str) -> tuple[Peer, int]:
        """The peer of a key registered for `task`; NotAuthenticated otherwise."""
        found = self.peers.by_key(client_key)
        if found is None or not task or not found[0].allows(task):
            # one answer for both cases: a caller learns nothing about whose key this is
            raise NotAuthenticated(
                f"key {auth.fingerprint(client_key)} is not accepted for task {task!r}"
            )
        return found

    def hello(self, client_key: bytes, task: str, client_nonce: bytes) -> tuple[bytes, bytes]:
        """Answer a client's challenge: (server nonce, signature)."""
        self.admit(client_key, task)
        if len(client_nonce) != auth.NONCE_BYTES:
            raise NotAuthenticated(f"client nonce must be {auth.NONCE_BYTES} bytes")
        server_nonce = auth.new_nonce()
        now = self._clock()
        with self._lock:
            while self._pending and (
                len(self._pending) >= self.max_pending
                or next(iter(self._pending.values())).expires < now
            ):
                self._pending.popitem(last=False)
            self._pending[server_nonce] = _Pending(client_key, task, client_nonce, now + self.ttl_s)
        message = auth.server_hello_message(
            client_key, self.identity.public_key, task, client_nonce, server_nonce
        )
        return server_nonce, self.identity.sign(message)

    def open_session(
        self, client_key: bytes, task: str, server_nonce: bytes, proof: bytes, method: str
    ) -> Session:
        """Check a client's proof for one call of `method`; the challenge is used up."""
        with self._lock:
            pending = self._pending.pop(server_nonce, None)
        if pending is None or pending.expires < self._clock():
            raise NotAuthenticated("no open challenge for this session (expired or used)")
        if pending.client_key != client_key or pending.task != task:
            raise NotAuthenticated("the challenge was issued to another key or task")
        peer, epoch = self.admit(client_key, task)
        message = auth.client_proof_message(
            client_key, self.identity.public_key, task, pending.client_nonce, server_nonce, method
        )
        if not auth.verify(client_key, message, proof):
            raise NotAuthenticated("bad handshake proof")
        return Session(auth.session_id(pending.client_nonce, server_nonce), peer, epoch, task)


def check_server_hello(
    peer: Peer,
    client_key: bytes,
    task: str,
    client_nonce: bytes,
    server_key: bytes,
    server_nonce: bytes,
    signature: bytes,
) -> None:
    """Client side: ImpostorPeer unless the answer is signed by `peer`'s registered key."""
    if server_key != peer.public_key:
        raise ImpostorPeer(
            f"{peer.address} answered with key {auth.fingerprint(server_key)}, "
            f"not peer {peer.peer_id}'s {auth.fingerprint(peer.public_key)}"
        )
    if len(server_nonce) != auth.NONCE_BYTES:
        raise ImpostorPeer(f"peer {peer.peer_id} sent a malformed challenge")
    message = auth.server_hello_message(client_key, server_key, task, client_nonce, server_nonce)
    if not auth.verify(server_key, message, signature):
        raise ImpostorPeer(f"peer {peer.peer_id}'s handshake signature does not verify")


class OpenSessions:
    """Calls in progress, so that a peer's removal or change ends them at once."""

    def __init__(self, peers: KnownPeers) -> None:
        self.peers = peers
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._open: dict[int, tuple[Session, Callable[[], object]]] = {}
        peers.add_listener(self.end_stale)

    @contextmanager
    def track(self, session: Session, cancel: Callable[[], object]) -> Iterator[None]:
        """Within the block, `cancel` is called if the session's peer is removed or changed."""
        key = next(self._ids)
        with self._lock:
            self._open[key] = (session, cancel)
        try:
            yield
        finally:
            with self._lock:
                self._open.pop(key, None)

    def end_stale(self) -> None:
        """Cancel every call whose peer entry is no longer current."""
        with self._lock:
            stale = [
                cancel
                for session, cancel in self._open.values()
                if not self.peers.is_current(session.peer.peer_id, session.epoch)
            ]
        for cancel in stale:
            cancel()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)
