"""The proxy's connections to the engines: asyncio protocols parsing answers with httptools.

The hop to a loopback engine is the proxy's whole cost, so it is built on transports rather than
streams or an HTTP client library: a request is written as it comes (no task per request, no
copy of the body), the answer is handed to the exchange callback by callback, and a connection
whose answer ended cleanly goes back to a per-engine idle list for the next request.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

from mlnode.infer.corked import CorkedWriter
from mlnode.infer.headers import HeadFields


class UpstreamError(Exception):
    """The engine could not be reached."""


class ResponseHandler(Protocol):
    """What an `EngineConnection` reports to the exchange it carries."""

    def on_response_head(self, status: int, reason: bytes, fields: HeadFields) -> None:
        """Status line and headers arrived."""

    def on_response_body(self, data: bytes) -> None:
        """A piece of the body arrived (already de-chunked)."""

    def on_response_end(self) -> None:
        """The answer is complete."""

    def on_upstream_lost(self, why: str) -> None:
        """The connection broke before the answer was complete."""

    def on_upstream_pause(self, paused: bool) -> None:
        """The engine reads the request body slower than it comes (or caught up again)."""


class EngineConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an engine, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: str) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.out: CorkedWriter | None = None
        self.handler: ResponseHandler | None = None
        self.reused = False
        self.responded = False
        self.keep_alive = False
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._fields = HeadFields()
        self._informational = False
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._close_delimited = False

    @property
    def usable(self) -> bool:
        """Open and not closing."""
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.out = CorkedWriter(self.transport)

    def start(self, handler: ResponseHandler, head: bytes) -> None:
        """Begin an exchange: write the request head; the body follows through `write`."""
        self.handler = handler
        self.responded = False
        self.pause_reading(False)
        self._arm_timer()
        self.write(head)

    def write(self, data: bytes) -> None:
        """Write part of the request (sent at the end of the loop turn)."""
        if self.out is not None:
            self.out.write(data)

    def pause_reading(self, paused: bool) -> None:
        """Hold back the answer while the client cannot take more."""
        if self.transport is None or self.transport.is_closing() or paused is self._paused:
            return
        self._paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection; the engine sees the client go away and stops generating."""
        self.handler = None
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; bytes nobody asked for close the connection."""
        if self.handler is None:
            self.abort()
            return
        self._arm_timer()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(f"engine sent malformed HTTP: {exc}")

    def eof_received(self) -> bool:
        """The engine closed its side: an answer delimited by close ends here."""
        if self.handler is not None and self.responded and self._close_delimited:
            self.keep_alive = False
            self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the idle list; an exchange in progress hears why."""
        self._cancel_timer()
        self.pool.forget(self)
        if self.handler is not None:
            self._lost(f"engine closed the connection ({exc!r})" if exc else "engine hung up")

    def pause_writing(self) -> None:
        """The engine's socket is full: stop reading the client's body."""
        if self.handler is not None:
            self.handler.on_upstream_pause(True)

    def resume_writing(self) -> None:
        """The engine caught up."""
        if self.handler is not None:
            self.handler.on_upstream_pause(False)

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        """Reason phrase (may come in pieces)."""
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line."""
        self._fields.add(name, value)

    def on_headers_complete(self) -> None:
        """Hand status and headers on; 1xx answers are skipped."""
        status = self._parser.get_status_code()
        reason, fields = self._reason, self._fields
        self._reason, self._fields = b"", HeadFields()
        if status < 200:
            self._informational = True
            return
        self.responded = True
        framed = fields.has_length or fields.chunked
        self._close_delimited = not framed and status not in (204, 304)
        if self.handler is not None:
            self.handler.on_response_head(status, reason, fields)

    def on_body(self, body: bytes) -> None:
        """Pass a piece of the body on."""
        if self.handler is not None:
            self.handler.on_response_body(body)

    def on_message_complete(self) -> None:
        """The answer ended; the connection may carry the next request."""
        if self._informational:
            self._informational = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    def _finish(self) -> None:
        handler, self.handler = self.handler, None
        self._cancel_timer()
        if handler is not None:
            handler.on_response_end()

    def _lost(self, why: str) -> None:
        handler, self.handler = self.handler, None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        if handler is not None:
            handler.on_upstream_lost(why)

    def _arm_timer(self) -> None:
        timeout = self.pool.read_timeout_s
        if timeout is None:
            return
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            timeout, self._lost, f"no bytes from the engine in {timeout}s"
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class UpstreamPool:
    """Kept-alive connections to each engine, keyed by `host:port`."""

    def __init__(
        self, connect_timeout_s: float, read_timeout_s: float | None, max_idle: int
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle = max_idle
        self._idle: dict[str, list[EngineConnection]] = {}

    def take_idle(self, key: str) -> EngineConnection | None:
        """A kept-alive connection to `key`, or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable:
                conn.reused = True
                return conn
        return None

    async def connect(self, host: str, port: int) -> EngineConnection:
        """A fresh connection; `UpstreamError` when the engine cannot be reached in time."""
        key = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: EngineConnection(self, key), host, port),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {key}: {exc!r}") from exc
        return conn

    def give_back(self, conn: EngineConnection) -> None:
        """Keep a connection whose answer ended cleanly, up to `max_idle` per engine."""
        idle = self._idle.setdefault(conn.key, [])
        if conn.keep_alive and conn.usable and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.abort()

    def forget(self, conn: EngineConnection) -> None:
        """Drop a closed connection from the idle list."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        """Close every idle connection."""
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.abort()
        self._idle.clear()
