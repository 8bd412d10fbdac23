"""`EngineProxy`: an ASGI app that forwards `/v1/*` to the least busy healthy engine.

Method, path, query, headers and body go upstream as they came; the answer streams back chunk by
chunk (server-sent events reach the client token by token). No healthy engine: 503. The engine
cannot be reached or fails before answering: 502. A client that disconnects cancels the upstream
request, which closes the connection to the engine, and vLLM aborts the generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from mlnode.common.errors import EngineFailed, MLNodeError, Unavailable
from mlnode.infer.balancer import Backend, LeastConnections
from mlnode.infer.upstream import UpstreamError, UpstreamPool, UpstreamResponse

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any
Send = Any

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)


async def send_error(send: Send, error: MLNodeError) -> None:
    """Answer with MLNode's error body and the error's status code."""
    await send_json(send, error.status_code, error.to_body())


async def send_json(send: Send, status: int, body: Any) -> None:
    """A complete JSON response."""
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _upstream_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]


def _downstream_headers(response: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in response.headers if k.lower() not in _HOP_BY_HOP]


def _target(scope: Scope) -> bytes:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return path + b"?" + query if query else path


class _DisconnectWatch:
    """Cancels the request's task when the client goes away before the answer is complete."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.disconnected = False
        self.finished = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        owner = asyncio.current_task()
        self._task = asyncio.create_task(self._watch(owner))

    async def _watch(self, owner: asyncio.Task[Any] | None) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finished and owner is not None:
            self.disconnected = True
            owner.cancel()

    def stop(self) -> None:
        self.finished = True
        if self._task is not None:
            self._task.cancel()


async def _rest_of_body(
    first: bytes, receive: Receive, watch: _DisconnectWatch
) -> AsyncIterator[bytes]:
    yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            watch.disconnected = True
            raise asyncio.CancelledError("client disconnected while sending its body")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class EngineProxy:
    """ASGI app for `/v1/*`; its upstream connections open and close with the service."""

    def __init__(self, balancer: LeastConnections, pool: UpstreamPool) -> None:
        self.balancer = balancer
        self.pool = pool

    async def close(self) -> None:
        """Close the kept-alive connections to the engines."""
        await self.pool.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward one HTTP request to the least busy engine."""
        if scope["type"] != "http":
            return
        backend = self.balancer.acquire()
        if backend is None:
            await send_error(send, Unavailable("no inference engine is serving"))
            return
        watch = _DisconnectWatch(receive)
        try:
            await self._forward(backend, scope, receive, send, watch)
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            log.debug("client went away; request to %s cancelled", backend.key)
        finally:
            watch.stop()
            self.balancer.release(backend)

    async def _forward(
        self, backend: Backend, scope: Scope, receive: Receive, send: Send, watch: _DisconnectWatch
    ) -> None:
        first = await receive()
        body: bytes = first.get("body", b"")
        streamed = first.get("more_body", False)
        if not streamed:
            watch.start()
        try:
            response = await self.pool.request(
                backend.host,
                backend.port,
                scope["method"].encode(),
                _target(scope),
                _upstream_headers(scope),
                _rest_of_body(body, receive, watch) if streamed else body,
            )
        except UpstreamError as exc:
            await send_error(send, EngineFailed(f"engine {backend.key} failed: {exc}"))
            return
        if streamed:
            watch.start()
        try:
            await self._relay(response, backend, send)
        finally:
            await response.aclose()
        watch.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay(self, response: UpstreamResponse, backend: Backend, send: Send) -> None:
        headers = _downstream_headers(response)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        try:
            async for chunk in response.body():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            error = EngineFailed(f"engine {backend.key} failed mid-response: {exc}")
            content_type = dict(response.headers).get(b"content-type", b"")
            if not content_type.startswith(b"text/event-stream"):
                raise error from exc
            event = b"data: " + json.dumps(error.to_body()).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
