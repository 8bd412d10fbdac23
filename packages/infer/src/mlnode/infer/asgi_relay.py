"""The proxy core behind an ASGI app, so the REST port can serve the engine routes too.

One-port mode: a network node with a single base URL calls `/v1/*` and `/tokenize` on the REST
port. Each ASGI request becomes one `ClientConnection` of the inference port's `Relay` over an
in-memory transport: the request is written to it as HTTP/1.1 bytes and the proxy's answer is
parsed back into ASGI messages. Balancing, routing, auth, errors and streaming are the proxy's
own; nothing of it is copied here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools
from starlette.types import Receive, Scope, Send

from mlnode.infer.headers import connection_tokens
from mlnode.infer.proxy import ClientConnection, Relay

Message = dict[str, Any]
# The ASGI server has framed the body and answered any `Expect: 100-continue` already.
_DROPPED = frozenset({b"connection", b"transfer-encoding", b"keep-alive", b"expect"})
_HIGH_WATER = 1 << 20


class _MemoryTransport(asyncio.Transport):
    """What the `ClientConnection` writes to: bytes go to the answer parser."""

    def __init__(self, sink: Callable[[bytes], None], on_close: Callable[[], None]) -> None:
        super().__init__()
        self._sink = sink
        self._on_close = on_close
        self._closing = False
        self.reading = asyncio.Event()
        self.reading.set()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._sink(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._on_close()

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_reading(self) -> bool:
        return self.reading.is_set()


class _Answer:
    """Parses the proxy's HTTP answer into ASGI messages on a queue."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.parser = httptools.HttpResponseParser(self)
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.headers: list[tuple[bytes, bytes]] = []
        self.buffered = 0
        self.complete = False

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def closed(self) -> None:
        if not self.complete:
            self.complete = True
            self.queue.put_nowait(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _DROPPED:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.queue.put_nowait(
            {"type": "http.response.start", "status": status, "headers": self.headers}
        )

    def on_body(self, body: bytes) -> None:
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.conn.write_paused:
            self.conn.pause_writing()
        self.queue.put_nowait({"type": "http.response.body", "body": body, "more_body": True})

    def on_message_complete(self) -> None:
        self.complete = True
        self.queue.put_nowait({"type": "http.response.body", "body": b"", "more_body": False})
        self.queue.put_nowait(None)


def _request_head(scope: Scope) -> tuple[bytes, bool]:
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    lines = [b"%b %b HTTP/1.1\r\n" % (scope["method"].encode(), target)]
    sized = False
    named = {
        token
        for name, value in scope["headers"]
        if name.lower() == b"connection"
        for token in connection_tokens(value)
    }
    for name, value in scope["headers"]:
        lname = name.lower()
        if lname in _DROPPED or lname in named:
            continue
        sized = sized or lname == b"content-length"
        lines.append(b"%b: %b\r\n" % (name, value))
    if not sized:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"connection: close\r\n\r\n")
    return b"".join(lines), sized


class EngineAsgi:
    """ASGI app relaying every request through the inference port's proxy core."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def relays(self, path: str) -> bool:
        """True for a path of the engine's API (what the REST port hands to this app)."""
        return self.relay.routes.relays(path.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        conn = self.relay.protocol()
        answer = _Answer(conn)
        transport = _MemoryTransport(answer.feed, answer.closed)
        conn.connection_made(transport)
        head, sized = _request_head(scope)
        conn.data_received(head)
        feeding = asyncio.create_task(self._feed(conn, transport, receive, sized))
        started = finished = False
        try:
            while (message := await answer.queue.get()) is not None:
                await send(message)
                started = True
                if message["type"] == "http.response.body":
                    finished = not message["more_body"]
                    answer.buffered -= len(message["body"])
                    if conn.write_paused and answer.buffered < _HIGH_WATER // 2:
                        conn.resume_writing()
            if started and not finished:
                # A bodyless answer (HEAD) or one the proxy cut: end it as the proxy did.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            feeding.cancel()
            if not transport.is_closing() or not answer.complete:
                _disconnect(conn, transport)

    async def _feed(
        self, conn: ClientConnection, transport: _MemoryTransport, receive: Receive, sized: bool
    ) -> None:
        more = True
        while more:
            await transport.reading.wait()
            message = await receive()
            if message["type"] == "http.disconnect":
                _disconnect(conn, transport)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if sized:
                if body:
                    conn.data_received(body)
            else:
                if body:
                    conn.data_received(b"%x\r\n%b\r\n" % (len(body), body))
                if not more:
                    conn.data_received(b"0\r\n\r\n")
        if (await receive())["type"] == "http.disconnect":
            _disconnect(conn, transport)


def _disconnect(conn: ClientConnection, transport: _MemoryTransport) -> None:
    """The client left: abandon the exchange (the engine connection drops) and end the answer."""
    transport.close()
    conn.connection_lost(None)
