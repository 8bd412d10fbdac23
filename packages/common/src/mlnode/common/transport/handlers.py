"""What the server does for each authenticated call, apart from grpc plumbing."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

from mlnode.common.transport import auth
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.api import TensorMeta, TensorProvider
from mlnode.common.transport.codec import encode, wire_dtype_of_torch
from mlnode.common.transport.errors import LimitExceeded, NotOffered
from mlnode.common.transport.framing import FrameReader, Limits, write_frames
from mlnode.common.transport.handshake import Session
from mlnode.common.transport.inbox import Inbox
from mlnode.common.transport.inbox_budget import TENSOR_OVERHEAD
from mlnode.common.transport.peers import KnownPeers
from mlnode.common.transport.wire import FrameLike, WireFrame


class Providers:
    """Thread-safe registry of the tensor provider served per task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_task: dict[str, TensorProvider] = {}

    def set(self, task: str, provider: TensorProvider) -> None:
        """Serve `provider` for `task` (replaces an earlier one)."""
        with self._lock:
            self._by_task[task] = provider

    def remove(self, task: str) -> None:
        """Serve nothing for `task`."""
        with self._lock:
            self._by_task.pop(task, None)

    def get(self, task: str) -> TensorProvider:
        """The provider of `task`; NotOffered when none."""
        with self._lock:
            provider = self._by_task.get(task)
        if provider is None:
            raise NotOffered(f"no tensors are offered for task {task!r}")
        return provider


def encode_listing(metas: Iterable[TensorMeta]) -> bytes:
    """The serialized list of offered tensors."""
    infos = [
        pb.TensorInfo(name=m.name, dtype=wire_dtype_of_torch(m.dtype).name, shape=m.shape)
        for m in metas
    ]
    return bytes(pb.TensorList(tensors=infos).SerializeToString())


class ServerHandlers:
    """Push into the inbox, list and fetch from providers, all within a checked session."""

    def __init__(
        self,
        identity: auth.Identity,
        peers: KnownPeers,
        inbox: Inbox,
        providers: Providers,
        limits: Limits,
        chunk_bytes: int,
    ) -> None:
        self.identity = identity
        self.peers = peers
        self.inbox = inbox
        self.providers = providers
        self.limits = limits
        self.chunk_bytes = chunk_bytes

    def push(self, session: Session, frames: Iterable[FrameLike], whole: bool = True) -> int:
        """Read a pushed stream; deliver it only when complete, verified and still authorized.

        `whole`: False for one push of a push stream (reading stops at its end frame).
        """
        reserved: list[int] = []
        task, peer_id = session.task, session.peer.peer_id

        def reserve(nbytes: int) -> None:
            charged = nbytes + TENSOR_OVERHEAD  # empty tensors are not free either
            self.inbox.reserve(task, peer_id, charged)
            reserved.append(charged)

        reader = FrameReader(
            session=session.id,
            signer_key=session.peer.public_key,
            task=session.task,
            limits=self.limits,
            alive=lambda: session.check(self.peers),
            reserve=reserve,
        )
        try:
            tag, tensors = reader.read(frames, whole)
            session.check(self.peers)
        finally:
            self.inbox.release(task, peer_id, sum(reserved))
        self.inbox.put(task, tag, peer_id, tensors)
        return len(tensors)

    def listing(self, session: Session) -> tuple[bytes, bytes]:
        """(listing, signature) of the tensors offered for the session's task."""
        listing = encode_listing(self.providers.get(session.task).describe())
        return listing, self.identity.sign(auth.listing_message(session.id, listing))

    def fetch(self, session: Session, names: Sequence[str]) -> Iterator[WireFrame]:
        """Signed frames of the named tensors; checks every name before the first frame."""
        provider = self.providers.get(session.task)
        if len(names) > self.limits.max_tensors:
            raise LimitExceeded(f"{len(names)} names asked, the limit is {self.limits.max_tensors}")
        offered = {m.name for m in provider.describe()}
        missing = [n for n in names if n not in offered]
        if missing or len(set(names)) != len(names):
            raise NotOffered(f"not offered for task {session.task!r} (or repeated): {missing}")
        return write_frames(
            (encode(name, provider.get(name)) for name in names),
            session=session.id,
            signer=self.identity,
            task=session.task,
            tag="",
            chunk_bytes=self.chunk_bytes,
            alive=lambda: session.check(self.peers),
        )
