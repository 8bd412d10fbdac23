"""Server interceptor: every call is authenticated before its handler reads a request message.

`Hello` needs a key registered for the named task (its nonce travels in metadata too, so it is
answered without reading a message); every other call needs a session proof
(`handshake.ServerHandshake.open_session`). A refused call gets UNAUTHENTICATED from a handler
that neither reads nor waits for the request stream, so a caller that sends headers and never
a message holds no server thread. An admitted call's handler gets its `Session` (or
`HelloGrant`) as `context.auth`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from mlnode.common.transport.errors import LimitExceeded, NotAuthenticated
from mlnode.common.transport.handshake import ServerHandshake, Session
from mlnode.common.transport.watchdog import PeerSlots

SERVICE = "/mlnode.transport.v1.Transport/"
HELLO = SERVICE + "Hello"
PUSH = SERVICE + "Push"
LIST = SERVICE + "List"
FETCH = SERVICE + "Fetch"
PUSH_STREAM = SERVICE + "PushStream"
KEY_MD = "mlnode-key-bin"
TASK_MD = "mlnode-task"
NONCE_MD = "mlnode-nonce-bin"
PROOF_MD = "mlnode-proof-bin"
CLIENT_NONCE_MD = "mlnode-client-nonce-bin"


@dataclass(frozen=True)
class HelloGrant:
    """An admitted Hello: the client's key and the task it named."""

    client_key: bytes
    task: str
    client_nonce: bytes


class AuthContext:
    """The call's servicer context plus what the interceptor established (`auth`)."""

    __slots__ = ("_context", "auth")

    def __init__(self, context: grpc.ServicerContext, auth: HelloGrant | Session) -> None:
        self._context = context
        self.auth = auth

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, Any]:
    return {item.key: item.value for item in details.invocation_metadata or ()}


def _bytes(md: dict[str, Any], key: str) -> bytes:
    value = md.get(key)
    if not isinstance(value, bytes):
        raise NotAuthenticated(f"missing {key} metadata")
    return value


def _handler(
    kind: grpc.RpcMethodHandler,
    behavior: Callable[..., Any],
    parse: bool,
    pool: ThreadPoolExecutor | None = None,
) -> Any:
    """A handler like `kind`, but whose requests are a stream.

    The sync server would wait for a unary request message in a worker thread, with no
    deadline, before it calls the behaviour; a stream handler starts at once.
    `pool`: the threads to run it on instead of the server's (grpc's per-handler pool).
    """
    if pool is not None:
        setattr(behavior, "experimental_thread_pool", pool)  # noqa: B010 (grpc reads it so)
    deserializer = kind.request_deserializer if parse else None
    serializer = kind.response_serializer
    if kind.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)
    return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)


def _refuse(
    kind: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, pool: ThreadPoolExecutor
) -> Any:
    def refuse(_: object, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    return _handler(kind, refuse, parse=False, pool=pool)


def _bind(
    kind: grpc.RpcMethodHandler,
    auth: HelloGrant | Session,
    pool: ThreadPoolExecutor | None,
    release: Callable[[], None] = lambda: None,
) -> Any:
    behavior = kind.stream_stream or kind.stream_unary or kind.unary_stream or kind.unary_unary

    def bound(request: object, context: grpc.ServicerContext) -> Any:
        return behavior(request, AuthContext(context, auth))

    def bound_then_release(request: object, context: grpc.ServicerContext) -> Any:
        try:
            result = bound(request, context)
        except BaseException:
            release()
            raise
        if not kind.response_streaming:
            release()
            return result
        return _released_after(result, release)

    return _handler(kind, bound_then_release, parse=True, pool=pool)


def _released_after(responses: Iterator[Any], release: Callable[[], None]) -> Iterator[Any]:
    try:
        yield from responses
    finally:
        release()


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Admits Hello by key and task, and every other call by its session proof.

    Refusals and Hello (short work, no reads) run on `fast_pool`, so they never queue behind
    authenticated transfers, and transfers never wait behind a flood of strangers.
    """

    def __init__(
        self, handshake: ServerHandshake, fast_pool: ThreadPoolExecutor, slots: PeerSlots
    ) -> None:
        self.handshake = handshake
        self.fast_pool = fast_pool
        self.slots = slots

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The call's handler bound to its authentication, or one that refuses it."""
        kind = continuation(handler_call_details)
        method = handler_call_details.method
        if kind is None:
            unknown = grpc.unary_unary_rpc_method_handler(lambda r, c: None)
            return _refuse(
                unknown, grpc.StatusCode.UNIMPLEMENTED, f"no method {method}", self.fast_pool
            )
        try:
            auth = self._authenticate(method, _metadata(handler_call_details))
        except NotAuthenticated as exc:
            return _refuse(kind, grpc.StatusCode.UNAUTHENTICATED, exc.message, self.fast_pool)
        if isinstance(auth, HelloGrant):
            return _bind(kind, auth, self.fast_pool)
        # a slot per authenticated call, taken here so that calls over the peer's share are
        # refused on the fast pool and never wait for (or hold) a transfer thread
        peer_id = auth.peer.peer_id
        try:
            self.slots.acquire(peer_id)
        except LimitExceeded as exc:
            return _refuse(kind, grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message, self.fast_pool)
        return _bind(kind, auth, None, lambda: self.slots.release(peer_id))

    def _authenticate(self, method: str, md: dict[str, Any]) -> HelloGrant | Session:
        client_key = _bytes(md, KEY_MD)
        task = md.get(TASK_MD)
        if not isinstance(task, str):
            raise NotAuthenticated(f"missing {TASK_MD} metadata")
        if method == HELLO:
            self.handshake.admit(client_key, task)
            return HelloGrant(client_key, task, _bytes(md, CLIENT_NONCE_MD))
        return self.handshake.open_session(
            client_key, task, _bytes(md, NONCE_MD), _bytes(md, PROOF_MD), method
        )
