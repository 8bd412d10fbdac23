"""A lean HTTP/1.1 client for the proxy's hop to the engines, on asyncio streams and h11.

httpx costs the proxy most of its CPU per request (its connection pool polls every idle socket
and re-checks expiry on each request; profiled at about 2/3 of the proxy's time), which on a
small CPU machine comes straight out of the engine's share. The hop to a loopback engine needs
far less: keep-alive connections per engine, one write per request with a complete body,
streaming both ways, and a retry on a fresh connection when a kept-alive one turns out closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import h11

_READ_SIZE = 64 * 1024

Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The engine could not be reached, or broke the connection."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    def close(self) -> None:
        self.writer.close()


class UpstreamResponse:
    """Status and headers of an engine's answer; iterate `body()` once, then `aclose()`."""

    def __init__(
        self, pool: UpstreamPool, key: str, conn: _Connection, response: h11.Response
    ) -> None:
        self.status_code = response.status_code
        self.headers: Headers = list(response.headers)
        self._pool, self._key, self._conn = pool, key, conn
        self._done = False

    async def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives; `UpstreamError` when the engine breaks off."""
        conn = self._conn
        while True:
            event = await _next_event(conn, self._pool.read_timeout_s)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                return

    async def aclose(self) -> None:
        """Give the connection back when the answer was read to its end, else close it."""
        conn = self._conn
        if self._done and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._pool.give_back(self._key, conn)
        else:
            conn.close()


async def _next_event(conn: _Connection, timeout_s: float | None) -> object:
    while True:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamError(f"engine broke the connection: {exc}") from exc
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await asyncio.wait_for(conn.reader.read(_READ_SIZE), timeout_s)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"reading from the engine failed: {exc!r}") from exc
        conn.h11.receive_data(data)


class UpstreamPool:
    """Keep-alive connections to each engine, keyed by `host:port`."""

    def __init__(
        self, connect_timeout_s: float, read_timeout_s: float | None, max_idle: int
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle = max_idle
        self._idle: dict[str, list[_Connection]] = {}

    def give_back(self, key: str, conn: _Connection) -> None:
        """Keep a finished connection for the next request."""
        idle = self._idle.setdefault(key, [])
        if len(idle) < self.max_idle and not conn.writer.is_closing():
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, host: str, port: int) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_READ_SIZE), self.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {host}:{port}: {exc!r}") from exc
        return _Connection(reader, writer)

    async def request(
        self,
        host: str,
        port: int,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
    ) -> UpstreamResponse:
        """Send one request and return once the answer's status and headers arrived."""
        key = f"{host}:{port}"
        all_headers = [(b"host", key.encode()), *headers]
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.writer.is_closing() or conn.reader.at_eof():
                conn.close()
                continue
            try:
                return await self._exchange(key, conn, method, target, all_headers, body)
            except _StaleConnection:
                conn.close()
        conn = await self._connect(host, port)
        try:
            return await self._exchange(key, conn, method, target, all_headers, body)
        except _StaleConnection as exc:
            conn.close()
            raise UpstreamError(f"engine {key} closed the connection") from exc

    async def _exchange(
        self,
        key: str,
        conn: _Connection,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes],
    ) -> UpstreamResponse:
        replayable = isinstance(body, bytes)
        try:
            await self._send(conn, method, target, headers, body)
            event = await _next_event(conn, self.read_timeout_s)
            while isinstance(event, h11.InformationalResponse):
                event = await _next_event(conn, self.read_timeout_s)
        except (UpstreamError, OSError) as exc:
            conn.close()
            if replayable and conn.h11.their_state is h11.SEND_RESPONSE:
                raise _StaleConnection from exc
            raise UpstreamError(f"engine {key} failed: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if not isinstance(event, h11.Response):
            conn.close()
            if replayable and isinstance(event, h11.ConnectionClosed):
                raise _StaleConnection
            raise UpstreamError(f"engine {key} sent {type(event).__name__} instead of a response")
        return UpstreamResponse(self, key, conn, event)

    async def _send(
        self,
        conn: _Connection,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes],
    ) -> None:
        if isinstance(body, bytes):
            if not any(k.lower() == b"content-length" for k, _ in headers):
                headers = [*headers, (b"content-length", str(len(body)).encode())]
            request = h11.Request(method=method, target=target, headers=headers)
            payload = conn.h11.send(request) or b""
            if body:
                payload += conn.h11.send(h11.Data(data=body)) or b""
            conn.writer.write(payload + (conn.h11.send(h11.EndOfMessage()) or b""))
            await conn.writer.drain()
            return
        if not any(k.lower() == b"content-length" for k, _ in headers):
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        request = h11.Request(method=method, target=target, headers=headers)
        conn.writer.write(conn.h11.send(request) or b"")
        async for chunk in body:
            if chunk:
                conn.writer.write(conn.h11.send(h11.Data(data=chunk)) or b"")
                await conn.writer.drain()
        conn.writer.write(conn.h11.send(h11.EndOfMessage()) or b"")
        await conn.writer.drain()

    async def aclose(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection was closed by the engine before it answered; try a fresh one."""
