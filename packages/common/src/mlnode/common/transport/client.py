"""`PeerClient`: one known peer, reached over a shared channel, with a fresh handshake per call.

A push's handshake is made ahead of time: after each push the next challenge is asked for in
the background, so a run of pushes to a peer does not pay the Hello's round trip each time
(one RTT of two per call on a long link). The protocol is untouched: each challenge is used
once, within the server's TTL, for the method it was proven for; a prefetched one the server
no longer holds (expired, or the peer restarted) is answered UNAUTHENTICATED before any frame is
read, and the push is made again with a fresh handshake.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import torch

from mlnode.common.errors import MLNodeError
from mlnode.common.transport import auth, wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport._gen import tensor_pb2_grpc as pb_grpc
from mlnode.common.transport.api import TensorLike, TensorMeta
from mlnode.common.transport.codec import (
    CodecError,
    WireDType,
    check_sendable,
    encode,
    wire_dtype,
)
from mlnode.common.transport.errors import (
    FetchCancelled,
    ImpostorPeer,
    IntegrityError,
    LimitExceeded,
    ListingMismatch,
    NotAuthenticated,
    NotOffered,
    PeerUnreachable,
    TransportError,
)
from mlnode.common.transport.framing import FrameReader, Limits, write_frames
from mlnode.common.transport.handshake import check_server_hello
from mlnode.common.transport.interceptors import (
    CLIENT_NONCE_MD,
    FETCH,
    KEY_MD,
    LIST,
    NONCE_MD,
    PROOF_MD,
    PUSH,
    PUSH_STREAM,
    TASK_MD,
)
from mlnode.common.transport.peers import Peer
from mlnode.common.transport.push_stream import (
    RETRY_CODES,
    PushStream,
    StreamBounds,
    StreamSlot,
    encoded,
)
from mlnode.common.transport.watchdog import Watchdog

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]

_ERRORS: dict[grpc.StatusCode, type[MLNodeError]] = {
    grpc.StatusCode.UNAUTHENTICATED: NotAuthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceeded,
    grpc.StatusCode.NOT_FOUND: NotOffered,
    grpc.StatusCode.UNAVAILABLE: PeerUnreachable,
    grpc.StatusCode.DEADLINE_EXCEEDED: PeerUnreachable,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
    grpc.StatusCode.INVALID_ARGUMENT: IntegrityError,
}


def translate(peer: Peer, error: grpc.RpcError) -> MLNodeError:
    """A typed error for a failed call, naming the peer and its answer."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    cls = _ERRORS.get(code, TransportError)
    return cls(f"peer {peer.peer_id} ({peer.address}): {code.name}: {details}")


@dataclass(frozen=True)
class CallTimeouts:
    """Deadlines of the handshake and of a whole transfer, in seconds."""

    handshake_s: float
    rpc_s: float
    #: How long a prefetched push handshake is used; 0 turns prefetching off.
    prefetch_s: float = 0.0


@dataclass(frozen=True)
class PreparedHandshake:
    """A push handshake made ahead: its session id, the call metadata and when it was made."""

    session: bytes
    metadata: Metadata
    made: float


class PeerClient:
    """Sends to, lists and fetches from one peer; blocking and thread-safe."""

    def __init__(
        self,
        channel: grpc.Channel,
        identity: auth.Identity,
        peer: Peer,
        limits: Limits,
        chunk_bytes: int,
        timeouts: CallTimeouts,
        alive: Callable[[], None] = lambda: None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._stub = pb_grpc.TransportStub(channel)  # type: ignore[no-untyped-call]
        self._push = channel.stream_unary(
            PUSH, request_serializer=wire.serialize, response_deserializer=pb.PushReply.FromString
        )
        self._push_stream = channel.stream_stream(
            PUSH_STREAM,
            request_serializer=wire.serialize,
            response_deserializer=pb.PushReply.FromString,
        )
        self._fetch = channel.unary_stream(
            FETCH,
            request_serializer=pb.FetchRequest.SerializeToString,
            response_deserializer=wire.parse,
        )
        self.identity = identity
        self.peer = peer
        self.limits = limits
        self.chunk_bytes = chunk_bytes
        self.timeouts = timeouts
        self.alive = alive
        self.watchdog = watchdog
        self._lock = threading.Lock()
        #: One handshake made ahead per task, for the next push.
        self._ready: dict[str, PreparedHandshake] = {}
        self._prefetching: set[str] = set()

    def handshake(
        self, task: str, method: str, timeout: float | None = None
    ) -> tuple[bytes, Metadata]:
        """Handshake for one call of `method`: (session id, the call's metadata)."""
        client_nonce = auth.new_nonce()
        metadata: Metadata = ((KEY_MD, self.identity.public_key), (TASK_MD, task))
        reply = self._stub.Hello(
            pb.HelloRequest(),
            metadata=(*metadata, (CLIENT_NONCE_MD, client_nonce)),
            timeout=min(self.timeouts.handshake_s, timeout or self.timeouts.handshake_s),
        )
        check_server_hello(
            self.peer,
            self.identity.public_key,
            task,
            client_nonce,
            reply.server_key,
            reply.server_nonce,
            reply.signature,
        )
        proof = self.identity.sign(
            auth.client_proof_message(
                self.identity.public_key,
                self.peer.public_key,
                task,
                client_nonce,
                reply.server_nonce,
                method,
            )
        )
        session = auth.session_id(client_nonce, reply.server_nonce)
        return session, (*metadata, (NONCE_MD, reply.server_nonce), (PROOF_MD, proof))

    def send(self, tensors: Mapping[str, TensorLike], task: str, tag: str) -> int:
        """Push tensors into the peer's inbox under (task, tag); the count it accepted."""
        _check_sendable(tensors)
        ready = self._take_ready(task)
        while True:
            # encoded one at a time while streaming: CUDA tensors are staged to host one by one
            encoded = (encode(name, tensor) for name, tensor in tensors.items())
            try:
                session, metadata = (
                    (ready.session, ready.metadata) if ready else self.handshake(task, PUSH)
                )
                frames = write_frames(
                    encoded,
                    session=session,
                    signer=self.identity,
                    task=task,
                    tag=tag,
                    chunk_bytes=self.chunk_bytes,
                    alive=self.alive,
                )
                reply = self._push(frames, metadata=metadata, timeout=self.timeouts.rpc_s)
            except grpc.RpcError as exc:
                self.alive()  # a peer removed here mid-send cancels the call: say so
                refused = (
                    isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNAUTHENTICATED
                )
                if ready is not None and refused:
                    ready = None  # the peer no longer holds that challenge: a fresh handshake
                    continue
                raise translate(self.peer, exc) from None
            self._prefetch(task)
            return int(reply.accepted)

    def open_stream(self, task: str, bounds: StreamBounds) -> PushStream:
        """A new push stream for `task` (one handshake; grpc.RpcError when refused)."""
        session, metadata = self.handshake(task, PUSH_STREAM)
        return PushStream(self._push_stream, session, metadata, task, bounds)

    def send_streamed(
        self,
        slot: StreamSlot,
        tensors: Mapping[str, TensorLike],
        task: str,
        tag: str,
        bounds: StreamBounds,
    ) -> int | None:
        """Push on the peer's push stream (opened or replaced as needed): the count accepted.

        None when the stream cannot take this push (in use by another send, larger than a whole
        stream, or the peer offers none): `send` it instead.
        """
        _check_sendable(tensors)
        nbytes = bounds.push_bytes(tensors)
        if nbytes > bounds.bytes or not slot.lock.acquire(blocking=False):
            return None
        try:
            if slot.owner is not self:  # the peer changed: its old stream is not ours
                slot.close()
                slot.owner, slot.offered = self, True
            for attempt in range(2):
                if not slot.offered:
                    return None
                stream = slot.stream
                reused = stream is not None and stream.fits(task, nbytes)
                if stream is None or not reused:
                    slot.close()
                    stream = self._open_in(slot, task, bounds)
                try:
                    return stream.push(
                        encoded(tensors),
                        signer=self.identity,
                        tag=tag,
                        chunk_bytes=self.chunk_bytes,
                        alive=self.alive,
                    )
                except grpc.RpcError as exc:
                    slot.close()
                    self.alive()  # a peer removed here mid-send cancels the call: say so
                    code = exc.code() if isinstance(exc, grpc.Call) else None
                    if code is grpc.StatusCode.UNIMPLEMENTED and not reused:
                        log.info("peer %s offers no push streams", self.peer.peer_id)
                        slot.offered = False
                        return None
                    if reused and code in RETRY_CODES and attempt == 0:
                        continue  # the peer ended the stream between pushes: a fresh one
                    raise translate(self.peer, exc) from None
                except BaseException:
                    slot.close()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            slot.lock.release()

    def _open_in(self, slot: StreamSlot, task: str, bounds: StreamBounds) -> PushStream:
        slot.permits.acquire()  # a stream is one of our calls to the peer while it is open
        try:
            slot.stream = self.open_stream(task, bounds)
        except grpc.RpcError as exc:
            slot.permits.release()
            raise translate(self.peer, exc) from None
        except BaseException:
            slot.permits.release()
            raise
        return slot.stream

    def _take_ready(self, task: str) -> PreparedHandshake | None:
        with self._lock:
            ready = self._ready.pop(task, None)
        if ready is None or time.monotonic() - ready.made > self.timeouts.prefetch_s:
            return None
        return ready

    def _prefetch(self, task: str) -> None:
        """Make the next push's handshake in the background (at most one per task at a time)."""
        if self.timeouts.prefetch_s <= 0:
            return
        with self._lock:
            if task in self._prefetching or task in self._ready:
                return
            self._prefetching.add(task)

        def work() -> None:
            try:
                session, metadata = self.handshake(task, PUSH)
            except Exception as exc:  # the next push makes its own handshake and reports
                log.debug("handshake ahead with %s failed: %s", self.peer.peer_id, exc)
                with self._lock:
                    self._prefetching.discard(task)
                return
            with self._lock:
                self._prefetching.discard(task)
                self._ready[task] = PreparedHandshake(session, metadata, time.monotonic())

        threading.Thread(target=work, name="transport-handshake-ahead", daemon=True).start()

    def list_tensors(self, task: str, timeout: float | None = None) -> list[TensorMeta]:
        """What the peer offers for `task`, checked against its signature."""
        try:
            session, metadata = self.handshake(task, LIST, timeout)
            reply = self._stub.List(
                pb.ListRequest(), metadata=metadata, timeout=timeout or self.timeouts.rpc_s
            )
        except grpc.RpcError as exc:
            raise translate(self.peer, exc) from None
        message = auth.listing_message(session, reply.listing)
        if not auth.verify(self.peer.public_key, message, reply.signature):
            raise ImpostorPeer(f"peer {self.peer.peer_id}'s tensor list is not signed by it")
        try:
            listing = pb.TensorList.FromString(reply.listing)
            return [
                TensorMeta(t.name, wire_dtype(t.dtype).torch_dtype, tuple(t.shape))
                for t in listing.tensors
            ]
        except (CodecError, ValueError) as exc:
            raise IntegrityError(f"peer {self.peer.peer_id} sent a bad list: {exc}") from None

    def fetch(
        self,
        task: str,
        names: Sequence[str],
        expected: Mapping[str, TensorMeta] | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, torch.Tensor]:
        """Pull named tensors; returns only once every one arrived and verified.

        With `expected`, each header must announce exactly that dtype and shape, checked before
        its buffer is allocated (ListingMismatch otherwise). Setting `cancel` ends the call
        (within the watchdog's tick) with FetchCancelled.
        """
        reader = FrameReader(
            session=b"",
            signer_key=self.peer.public_key,
            task=task,
            limits=self.limits,
            alive=self.alive,
            check=self._as_expected(expected) if expected is not None else _accept,
        )
        try:
            reader.session, metadata = self.handshake(task, FETCH, timeout)
            frames = self._fetch(
                pb.FetchRequest(names=list(names)),
                metadata=metadata,
                timeout=timeout or self.timeouts.rpc_s,
            )
            watching = None
            if cancel is not None and self.watchdog is not None:
                watching = self.watchdog.watch(cancel.is_set, frames.cancel)
            try:
                _, tensors = reader.read(frames)
            finally:
                frames.cancel()  # a no-op after a complete stream; stops the peer after a bad one
                if watching is not None:
                    self.watchdog.unwatch(watching)  # type: ignore[union-attr]
        except grpc.RpcError as exc:
            if cancel is not None and cancel.is_set():
                raise FetchCancelled(f"fetch from peer {self.peer.peer_id} cancelled") from None
            raise translate(self.peer, exc) from None
        if list(tensors) != list(names):
            got = list(tensors)
            raise IntegrityError(f"peer {self.peer.peer_id} sent {got}, not {list(names)}")
        return tensors

    def _as_expected(
        self, expected: Mapping[str, TensorMeta]
    ) -> Callable[[str, WireDType, tuple[int, ...]], None]:
        def check(name: str, dtype: WireDType, shape: tuple[int, ...]) -> None:
            meta = expected.get(name)
            if meta is None or meta.dtype != dtype.torch_dtype or meta.shape != shape:
                listed = f"{meta.dtype} {meta.shape}" if meta else "nothing"
                raise ListingMismatch(
                    f"peer {self.peer.peer_id} announced {name!r} as {dtype.name} {shape}, "
                    f"listed {listed}"
                )

        return check


def _accept(name: str, dtype: WireDType, shape: tuple[int, ...]) -> None:
    return None


def _check_sendable(tensors: Mapping[str, TensorLike]) -> None:
    """Refuse, before any handshake, a tensor the codec cannot send."""
    try:
        for name, tensor in tensors.items():
            check_sendable(name, tensor)
    except CodecError as exc:
        raise LimitExceeded(str(exc)) from None
