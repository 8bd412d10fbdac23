"""Push streams: many pushes to one peer after one handshake, small tensors bundled.

A single `Push` pays a handshake, a call's set-up and the server's proof check every time; at
1 MiB that fixed cost is most of the call. A `PushStream` call is opened with the same
handshake (its proof names the method `PushStream`) and then carries push after push: push i is
written exactly like a single push, but signed under `auth.push_session(session, i)`, so each
push keeps its own binding (a push replayed, reordered or moved to another stream does not
verify) and the server answers each with its own `PushReply` once it is delivered.

The server bounds a stream (`StreamBounds`: pushes, bytes, lifetime, idle time between pushes);
a client retires its stream well before any bound, so honest pushes never meet one. A stream
holds one of the client's calls to the peer (`MLNODE_GRPC_MAX_CALLS_PER_PEER`) while open, and
is closed after half the idle time without a push. A peer that does not offer push streams
(`UNIMPLEMENTED`) is sent single pushes from then on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from mlnode.common.transport import auth
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.api import TensorLike
from mlnode.common.transport.codec import EncodedTensor, encode
from mlnode.common.transport.errors import PeerUnreachable
from mlnode.common.transport.framing import write_frames
from mlnode.common.transport.wire import WireFrame

log = logging.getLogger(__name__)

GIB = 1 << 30
#: Bytes a push adds to its payload on the wire (headers, trailers, end), counted generously.
PUSH_OVERHEAD = 4096
TENSOR_OVERHEAD = 1024


@dataclass(frozen=True)
class StreamBounds:
    """What one push stream may carry (`MLNODE_GRPC_STREAM_*`); `pushes` 0: no streams."""

    pushes: int = 256
    bytes: int = 4 * GIB
    lifetime_s: float = 60.0
    idle_s: float = 10.0

    def push_bytes(self, tensors: Mapping[str, TensorLike]) -> int:
        """What a push of `tensors` counts against `bytes`, at most."""
        payload = sum(int(t.nbytes) for t in tensors.values())
        return payload + PUSH_OVERHEAD + TENSOR_OVERHEAD * len(tensors)


def _wire_size(frame: WireFrame) -> int:
    return len(frame) if isinstance(frame, bytes) else int(frame.ByteSize())


#: Opens the call: (request frames, metadata, timeout) -> the reply stream.
OpenCall = Callable[..., Any]


class PushStream:
    """One open `PushStream` call for one task; used by one push at a time."""

    def __init__(
        self,
        open_call: OpenCall,
        session: bytes,
        metadata: tuple[tuple[str, str | bytes], ...],
        task: str,
        bounds: StreamBounds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.task = task
        self.bounds = bounds
        self._clock = clock
        # One push's frames at a time, written on gRPC's own thread as it sends them (as for a
        # single Push): no hand-off of every frame between threads.
        self._queue: queue.Queue[Iterator[WireFrame] | None] = queue.Queue(maxsize=1)
        self._replies = open_call(
            self._requests(), metadata=metadata, timeout=bounds.lifetime_s + 5.0
        )
        self.pushes = 0
        self.carried = 0
        self.opened = self.last_used = clock()
        self.broken = False

    def _requests(self) -> Iterator[WireFrame]:
        while True:
            frames = self._queue.get()
            if frames is None:
                return
            yield from frames

    def _counted(self, frames: Iterator[WireFrame]) -> Iterator[WireFrame]:
        for frame in frames:
            self.carried += _wire_size(frame)
            yield frame

    def fits(self, task: str, nbytes: int) -> bool:
        """True while a push of `nbytes` stays well inside every bound of the peer's server."""
        now = self._clock()
        return (
            not self.broken
            and task == self.task
            and self.pushes < self.bounds.pushes
            and self.carried + nbytes <= self.bounds.bytes
            and now - self.opened < self.bounds.lifetime_s / 2
            and now - self.last_used < self.bounds.idle_s / 2
        )

    def idle(self) -> bool:
        """True once the stream should be closed without waiting for a push."""
        now = self._clock()
        return (
            now - self.last_used >= self.bounds.idle_s / 2
            or now - self.opened >= self.bounds.lifetime_s / 2
        )

    def push(
        self,
        tensors: Iterable[EncodedTensor],
        *,
        signer: auth.Identity,
        tag: str,
        chunk_bytes: int,
        alive: Callable[[], None],
    ) -> int:
        """Send one push and wait for its reply: the count the peer accepted.

        grpc.RpcError when the call failed (also when `alive` raised while gRPC wrote the
        frames: the call is then cancelled, and the peer delivers nothing of this push).
        """
        index = self.pushes
        self.pushes += 1
        self.broken = True  # until the reply came
        frames = write_frames(
            tensors,
            session=auth.push_session(self.session, index),
            signer=signer,
            task=self.task,
            tag=tag,
            chunk_bytes=chunk_bytes,
            alive=alive,
            bundle=True,
        )
        self._put(self._counted(frames))
        reply = self._reply()
        self.broken = False
        self.last_used = self._clock()
        return int(reply.accepted)

    def _put(self, frames: Iterator[WireFrame]) -> None:
        while True:
            try:
                self._queue.put(frames, timeout=0.1)
                return
            except queue.Full:
                if self._replies.done():  # the peer ended the call: its status says why
                    self._reply()
                    raise PeerUnreachable("the peer ended the push stream") from None

    def _reply(self) -> pb.PushReply:
        try:
            return next(self._replies)  # type: ignore[no-any-return]
        except StopIteration:
            raise PeerUnreachable("the peer ended the push stream") from None

    def close(self) -> None:
        """End the call: cleanly after a finished push, cancelled after a broken one."""
        if not self.broken:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                pass
        self._replies.cancel()


class StreamSlot:
    """A peer's push stream (at most one), the call permit it holds and whether it is offered."""

    def __init__(self, permits: threading.BoundedSemaphore) -> None:
        self.lock = threading.Lock()
        self.permits = permits
        self.stream: PushStream | None = None
        self.owner: object = None
        self.offered = True

    def close(self) -> None:
        """Close the stream, if any, and give its call permit back (caller holds `lock`)."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.close()
            self.permits.release()


class PushStreams:
    """The transport's push streams, one slot per peer."""

    def __init__(self, bounds: StreamBounds) -> None:
        self.bounds = bounds
        self._lock = threading.Lock()
        self._slots: dict[str, StreamSlot] = {}

    def slot(self, peer_id: str, permits: threading.BoundedSemaphore) -> StreamSlot:
        """The peer's slot (made on first use)."""
        with self._lock:
            return self._slots.setdefault(peer_id, StreamSlot(permits))

    def close_idle(self) -> None:
        """Close streams idle for half the server's idle time (or half its lifetime old)."""
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            if slot.lock.acquire(blocking=False):
                try:
                    if slot.stream is not None and slot.stream.idle():
                        slot.close()
                finally:
                    slot.lock.release()

    def close_all(self) -> None:
        """Close every stream (the transport stops)."""
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            with slot.lock:
                slot.close()


def encoded(tensors: Mapping[str, TensorLike]) -> Iterator[EncodedTensor]:
    """Tensors encoded one at a time while streaming (CUDA ones staged to host one by one)."""
    return (encode(name, tensor) for name, tensor in tensors.items())


#: Codes after which a reused stream is replaced and the push made once more: the peer ended
#: the call (its idle or lifetime bound, a restart) before this push began to count.
RETRY_CODES = (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
