"""The gRPC servicer: thin, maps each call to `ServerHandlers` and errors to status codes.

Every handler is registered with a request *stream* (see `interceptors._handler`), so no call
waits for a request message in a worker thread before it is authenticated; reads an
authenticated call makes are armed with the idle deadline, and each authenticated call ends by
the server-side call deadline (its peer slot is taken by the interceptor). A push or fetch whose
peer moves fewer bytes than the floor rate over a window of its own time is cancelled.
A push stream carries many pushes after one handshake, each read, checked and delivered like
a single push under its own session (`auth.push_session`), within the stream's bounds.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

import grpc

from mlnode.common.errors import MLNodeError
from mlnode.common.transport import auth, wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport._gen import tensor_pb2_grpc as pb_grpc
from mlnode.common.transport.errors import IntegrityError, LimitExceeded
from mlnode.common.transport.handlers import ServerHandlers
from mlnode.common.transport.handshake import OpenSessions, ServerHandshake, Session
from mlnode.common.transport.interceptors import AuthContext, HelloGrant
from mlnode.common.transport.push_stream import StreamBounds
from mlnode.common.transport.watchdog import RateFloor, Watchdog

log = logging.getLogger(__name__)

#: Errors of our own code on hostile input: answered INTERNAL without details, logged here.
UNEXPECTED = (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError, MemoryError)


def _abort(context: grpc.ServicerContext, exc: MLNodeError) -> NoReturn:
    status = getattr(exc, "grpc_status", "INVALID_ARGUMENT")
    auth = getattr(context, "auth", None)
    peer = auth.peer.peer_id if isinstance(auth, Session) else "?"
    log.warning("refused a call from peer %s: %s", peer, exc.message)
    context.abort(getattr(grpc.StatusCode, status), exc.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def frame_size(frame: wire.FrameLike | wire.WireFrame) -> int:
    """Bytes a frame carries on the wire (what the rate floor counts)."""
    if isinstance(frame, bytes):
        return len(frame)
    if isinstance(frame, wire.ChunkFrame):
        return len(frame.chunk)
    if isinstance(frame, wire.BundleFrame):
        return frame.wire_bytes
    if isinstance(frame, pb.Frame):
        return int(frame.ByteSize())
    return 0


def _session(context: Any) -> Session:
    return cast(Session, cast(AuthContext, context).auth)


class TransportServicer(pb_grpc.TransportServicer):
    """Hello, Push, List and Fetch over the handshake and the handlers."""

    def __init__(
        self,
        handshake: ServerHandshake,
        handlers: ServerHandlers,
        watchdog: Watchdog,
        idle_timeout_s: float,
        call_timeout_s: float,
        rate_floor: tuple[float, float] = (0.0, 1.0),
        stream: StreamBounds | None = None,
    ) -> None:
        self.handshake = handshake
        self.handlers = handlers
        self.sessions = OpenSessions(handshake.peers)
        self.watchdog = watchdog
        self.idle_timeout_s = idle_timeout_s
        self.call_timeout_s = call_timeout_s
        self.min_bytes_per_s, self.rate_window_s = rate_floor
        self.stream = stream or StreamBounds()

    @contextmanager
    def _floor(self, context: Any, session: Session) -> Iterator[RateFloor | None]:
        """A rate floor on this call, watched until it ends (None when the floor is 0)."""
        if self.min_bytes_per_s <= 0:
            yield None
            return
        meter = RateFloor(self.min_bytes_per_s, self.rate_window_s)

        def cut_off() -> None:
            log.warning(
                "cut off a call from peer %s: %d bytes in %.0f s of its time, below "
                "MLNODE_GRPC_MIN_BYTES_PER_S=%d",
                session.peer.peer_id,
                meter.slow_bytes,
                self.rate_window_s,
                self.min_bytes_per_s,
            )
            context.cancel()

        token = self.watchdog.watch(meter.too_slow, cut_off)
        try:
            yield meter
        finally:
            self.watchdog.unwatch(token)

    @contextmanager
    def _serving(self, context: Any) -> Iterator[Session]:
        """One authenticated call: the call deadline, errors as status codes."""
        session = _session(context)
        deadline = self.watchdog.arm(self.call_timeout_s, context.cancel)
        try:
            with self.sessions.track(session, context.cancel):
                yield session
        except MLNodeError as exc:
            _abort(context, exc)
        except grpc.RpcError:  # cancelled by the peer, a revocation or a deadline
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled or went idle")
            raise
        except UNEXPECTED:
            log.exception("call from peer %s failed", session.peer.peer_id)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise
        finally:
            self.watchdog.disarm(deadline)

    def _read(
        self, requests: Iterator[Any], context: Any, meter: RateFloor | None = None
    ) -> Iterator[Any]:
        return self.watchdog.guarded(
            iter(requests), self.idle_timeout_s, context.cancel, meter, frame_size
        )

    def Hello(self, request_iterator: Iterator[bytes], context: Any) -> pb.HelloReply:
        """Answer the client's challenge with ours, signed (the body is never read)."""
        grant = cast(HelloGrant, cast(AuthContext, context).auth)
        try:
            nonce, signature = self.handshake.hello(
                grant.client_key, grant.task, grant.client_nonce
            )
        except MLNodeError as exc:
            _abort(context, exc)
        return pb.HelloReply(
            server_key=self.handshake.identity.public_key, server_nonce=nonce, signature=signature
        )

    def Push(self, request_iterator: Iterator[wire.FrameLike], context: Any) -> pb.PushReply:
        """Receive a pushed stream into the inbox."""
        with self._serving(context) as session, self._floor(context, session) as meter:
            frames = self._read(request_iterator, context, meter)
            return pb.PushReply(accepted=self.handlers.push(session, frames))

    def List(self, request_iterator: Iterator[bytes], context: Any) -> pb.ListReply:
        """The signed list of tensors offered for the session's task (the empty body is unread)."""
        with self._serving(context) as session:
            listing, signature = self.handlers.listing(session)
            return pb.ListReply(listing=listing, signature=signature)

    def Fetch(
        self, request_iterator: Iterator[pb.FetchRequest], context: Any
    ) -> Iterator[wire.WireFrame]:
        """Stream the named tensors, signed; a peer that stops reading is cut at the deadline."""
        with self._serving(context) as session:
            request = next(self._read(request_iterator, context), None)
            if request is None:
                raise IntegrityError("fetch call without its request")
            frames = self.handlers.fetch(session, list(request.names))
            with self._floor(context, session) as meter:
                yield from self.watchdog.paced(
                    frames, self.idle_timeout_s, context.cancel, meter, frame_size
                )

    def PushStream(
        self, request_iterator: Iterator[wire.FrameLike], context: Any
    ) -> Iterator[pb.PushReply]:
        """Pushes after one handshake, each answered once delivered.

        The stream is bounded in pushes, bytes and time (`StreamBounds`); each push, like a
        single one, by the idle deadline, the rate floor and the inbox's budgets.
        """
        with self._serving(context) as session:
            lifetime = self.watchdog.arm(self.stream.lifetime_s, context.cancel)
            try:
                requests = iter(request_iterator)
                carried = [0]
                for index in itertools.count():
                    first = self._next(requests, self.stream.idle_s, context)
                    if first is None:
                        return
                    if index >= self.stream.pushes:
                        raise LimitExceeded(
                            f"more than {self.stream.pushes} pushes on one push stream "
                            "(MLNODE_GRPC_STREAM_PUSHES)"
                        )
                    push = Session(
                        auth.push_session(session.id, index),
                        session.peer,
                        session.epoch,
                        session.task,
                    )
                    with self._floor(context, session) as meter:
                        frames = self._push_frames(first, requests, context, meter, carried)
                        accepted = self.handlers.push(push, frames, whole=False)
                    yield pb.PushReply(accepted=accepted)
            finally:
                self.watchdog.disarm(lifetime)

    def _next(
        self,
        requests: Iterator[wire.FrameLike],
        seconds: float,
        context: Any,
        meter: RateFloor | None = None,
    ) -> wire.FrameLike | None:
        """The peer's next frame (None at the end of its stream), cancelled after `seconds`."""
        token = self.watchdog.arm(seconds, context.cancel)
        if meter is not None:
            meter.wait_begins()
        try:
            frame = next(requests, None)
        finally:
            self.watchdog.disarm(token)
        if meter is not None and frame is not None:
            meter.wait_ends(frame_size(frame))
        return frame

    def _push_frames(
        self,
        first: wire.FrameLike,
        requests: Iterator[wire.FrameLike],
        context: Any,
        meter: RateFloor | None,
        carried: list[int],
    ) -> Iterator[wire.FrameLike]:
        """One push's frames from a push stream (the reader stops at its end frame)."""
        frame: wire.FrameLike | None = first
        while frame is not None:
            carried[0] += frame_size(frame)
            if carried[0] > self.stream.bytes:
                raise LimitExceeded(
                    f"more than {self.stream.bytes} bytes on one push stream "
                    "(MLNODE_GRPC_STREAM_BYTES)"
                )
            yield frame
            frame = self._next(requests, self.idle_timeout_s, context, meter)


def add_servicer(
    servicer: TransportServicer, server: grpc.Server, push_streams: bool = True
) -> None:
    """Register the servicer; tensor frames use `wire`'s zero-copy chunk (de)serializers.

    `push_streams` False: PushStream is not offered (callers get UNIMPLEMENTED).

    Every method is registered with a request stream on this side (the wire is the same), so
    the server never blocks a thread waiting for a unary request before the handler runs.
    """
    handlers = {
        "Hello": grpc.stream_unary_rpc_method_handler(
            servicer.Hello, None, pb.HelloReply.SerializeToString
        ),
        "Push": grpc.stream_unary_rpc_method_handler(
            servicer.Push, wire.parse, pb.PushReply.SerializeToString
        ),
        "List": grpc.stream_unary_rpc_method_handler(
            servicer.List, None, pb.ListReply.SerializeToString
        ),
        "Fetch": grpc.stream_stream_rpc_method_handler(
            servicer.Fetch, pb.FetchRequest.FromString, wire.serialize
        ),
    }
    if push_streams:
        handlers["PushStream"] = grpc.stream_stream_rpc_method_handler(
            servicer.PushStream, wire.parse, pb.PushReply.SerializeToString
        )
    generic = grpc.method_handlers_generic_handler("mlnode.transport.v1.Transport", handlers)
    server.add_generic_rpc_handlers((generic,))
