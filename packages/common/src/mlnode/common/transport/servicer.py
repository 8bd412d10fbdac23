"""The gRPC servicer: thin, maps each call to `ServerHandlers` and errors to status codes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NoReturn, cast

import grpc

from mlnode.common.errors import MLNodeError
from mlnode.common.transport import wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport._gen import tensor_pb2_grpc as pb_grpc
from mlnode.common.transport.handlers import ServerHandlers
from mlnode.common.transport.handshake import OpenSessions, ServerHandshake, Session
from mlnode.common.transport.interceptors import AuthContext, HelloGrant

log = logging.getLogger(__name__)


def _abort(context: grpc.ServicerContext, exc: MLNodeError) -> NoReturn:
    status = getattr(exc, "grpc_status", "INVALID_ARGUMENT")
    auth = getattr(context, "auth", None)
    peer = auth.peer.peer_id if isinstance(auth, Session) else "?"
    log.warning("refused a call from peer %s: %s", peer, exc.message)
    context.abort(getattr(grpc.StatusCode, status), exc.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _session(context: Any) -> Session:
    return cast(Session, cast(AuthContext, context).auth)


class TransportServicer(pb_grpc.TransportServicer):
    """Hello, Push, List and Fetch over the handshake and the handlers."""

    def __init__(self, handshake: ServerHandshake, handlers: ServerHandlers) -> None:
        self.handshake = handshake
        self.handlers = handlers
        self.sessions = OpenSessions(handshake.peers)

    def Hello(self, request: pb.HelloRequest, context: Any) -> pb.HelloReply:
        """Answer the client's challenge with ours, signed."""
        grant = cast(HelloGrant, cast(AuthContext, context).auth)
        try:
            nonce, signature = self.handshake.hello(
                grant.client_key, grant.task, request.client_nonce
            )
        except MLNodeError as exc:
            _abort(context, exc)
        return pb.HelloReply(
            server_key=self.handshake.identity.public_key, server_nonce=nonce, signature=signature
        )

    def Push(self, request_iterator: Iterator[wire.FrameLike], context: Any) -> pb.PushReply:
        """Receive a pushed stream into the inbox."""
        session = _session(context)
        try:
            with self.sessions.track(session, context.cancel):
                return pb.PushReply(accepted=self.handlers.push(session, request_iterator))
        except MLNodeError as exc:
            _abort(context, exc)
        except grpc.RpcError:  # the client cancelled or vanished mid-stream: nothing delivered
            context.abort(grpc.StatusCode.CANCELLED, "the stream was cancelled by the peer")
            raise

    def List(self, request: pb.ListRequest, context: Any) -> pb.ListReply:
        """The signed list of tensors offered for the session's task."""
        try:
            listing, signature = self.handlers.listing(_session(context))
        except MLNodeError as exc:
            _abort(context, exc)
        return pb.ListReply(listing=listing, signature=signature)

    def Fetch(self, request: pb.FetchRequest, context: Any) -> Iterator[wire.WireFrame]:
        """Stream the named tensors, signed."""
        session = _session(context)
        try:
            with self.sessions.track(session, context.cancel):
                yield from self.handlers.fetch(session, list(request.names))
        except MLNodeError as exc:
            _abort(context, exc)


def add_servicer(servicer: TransportServicer, server: grpc.Server) -> None:
    """Register the servicer; tensor frames use `wire`'s zero-copy chunk (de)serializers."""
    handlers = {
        "Hello": grpc.unary_unary_rpc_method_handler(
            servicer.Hello, pb.HelloRequest.FromString, pb.HelloReply.SerializeToString
        ),
        "Push": grpc.stream_unary_rpc_method_handler(
            servicer.Push, wire.parse, pb.PushReply.SerializeToString
        ),
        "List": grpc.unary_unary_rpc_method_handler(
            servicer.List, pb.ListRequest.FromString, pb.ListReply.SerializeToString
        ),
        "Fetch": grpc.unary_stream_rpc_method_handler(
            servicer.Fetch, pb.FetchRequest.FromString, wire.serialize
        ),
    }
    generic = grpc.method_handlers_generic_handler("mlnode.transport.v1.Transport", handlers)
    server.add_generic_rpc_handlers((generic,))
