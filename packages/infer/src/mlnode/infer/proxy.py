"""The inference port's HTTP/1.1 server: `/v1/*` forwarded to the least busy healthy engine.

Method, path, query, headers and body go upstream as they come; the answer streams back piece by
piece (server-sent events reach the client token by token). `routing.InferenceRoutes` decides
what is relayed (the engine's API, after the `/{version}` prefix is stripped and the token
checked) and what is answered here. No healthy engine: 503. The engine
cannot be reached or fails before answering: 502. A client that disconnects drops the
connection to the engine, and vLLM aborts the generation. `GET /health` is answered here.

Each client connection is an asyncio protocol parsing with httptools, the HTTP/1.1 front end of
the exchange core (`exchange.py`; one-port mode's ASGI front end is `asgi_relay.py`): it writes
what an exchange answers as bytes, framing a body without a length in chunks. An exchange writes
to the engine's connection directly, so a request costs no task, no queue and no copy of its
body. Flow control runs both ways: a full client socket pauses reading from the engine, a full
engine socket pauses reading from the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from mlnode.common.errors import (
    BadRequest,
    MLNodeError,
)
from mlnode.common.http.answers import JsonAnswer, status_head
from mlnode.common.http.limits import HttpLimits, RequestTimeout
from mlnode.infer.answers import chunk
from mlnode.infer.balancer import LeastConnections
from mlnode.infer.corked import CorkedWriter
from mlnode.infer.exchange import Exchange
from mlnode.infer.headers import HeadFields
from mlnode.infer.limits import ConnectionClock, HeadBudget, Reading, Stall
from mlnode.infer.routing import InferenceRoutes
from mlnode.infer.upstream import UpstreamPool
from mlnode.infer.validation.hook import ValidationGate

log = logging.getLogger(__name__)

_CONTINUE = status_head(100) + b"\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"


class Relay:
    """What every client connection shares: the balancer, the engine connections, the openers."""

    def __init__(
        self,
        balancer: LeastConnections,
        pool: UpstreamPool,
        serving: Callable[[], bool],
        limits: HttpLimits | None = None,
        validation: ValidationGate | None = None,
        routes: InferenceRoutes | None = None,
    ) -> None:
        self.balancer = balancer
        self.pool = pool
        self.serving = serving
        self.limits = limits or HttpLimits()
        self.validation = validation
        self.routes = routes or InferenceRoutes()
        self.connections: set[ClientConnection] = set()

    def protocol(self) -> ClientConnection:
        """Protocol factory for `loop.create_server`."""
        return ClientConnection(self)

    def close(self) -> None:
        """Close the kept-alive connections to the engines."""
        self.pool.close()


class ClientConnection(asyncio.Protocol):
    """One client connection of the inference port; its exchanges run one after another."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.out: CorkedWriter | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self._parsing: Exchange | None = None
        self._url = b""
        self._fields = HeadFields()
        self._paused_by: set[str] = set()
        self.write_paused = False
        self._chunked_out = False
        self.budget = HeadBudget(relay.limits)
        self.clock: ConnectionClock | None = None

    @property
    def idle(self) -> bool:
        """No exchange in progress."""
        return not self.exchanges

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the relay."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.out = CorkedWriter(self.transport)
        self.relay.connections.add(self)
        self.clock = ConnectionClock(self.relay.limits, self._stalled)

    def connection_lost(self, exc: Exception | None) -> None:
        """Abandon every exchange of this connection."""
        self.relay.connections.discard(self)
        if self.clock is not None:
            self.clock.stop()
        for exchange in self.exchanges:
            exchange.abandon()
        self.exchanges.clear()
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        """Parse; 400 for a malformed request, 431 for a head past the limits, then close."""
        if self.clock is not None:
            self.clock.data()
        try:
            self._feed_within_budget(data)
        except httptools.HttpParserUpgrade:
            self._refuse(BadRequest("protocol upgrades are not supported"))
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, MLNodeError):
                self._refuse(exc.__context__)
                return
            log.exception("inference proxy failed on a request")
            self._refuse(BadRequest("the proxy could not handle this request"))
        except httptools.HttpParserError as exc:
            self._refuse(BadRequest(f"malformed HTTP request: {exc}"))
        except MLNodeError as exc:
            self._refuse(exc)

    def _feed_within_budget(self, data: bytes) -> None:
        """Feed no more head bytes than the limit allows: a huge head is never buffered."""
        while data:
            in_head = self.clock is not None and self.clock.reading is not Reading.BODY
            room = self.budget.room()
            if not in_head or len(data) <= room:
                self.budget.spend(len(data) if in_head else 0)
                self.parser.feed_data(data)
                return
            heads = self.budget.heads
            self.budget.spend(room)
            self.parser.feed_data(data[:room])
            data = data[room:]
            same_head = self.budget.heads == heads
            if same_head and self.clock is not None and self.clock.reading is not Reading.BODY:
                raise self.budget.exhausted()

    def _stalled(self, stall: Stall) -> None:
        """The client took too long: 408 for a half-sent request, a plain close when idle."""
        first = self.exchanges[0] if self.exchanges else None
        if stall is Stall.IDLE or (stall is Stall.BODY and first is None):
            # Nothing asked, or the answer already went out: no request is left to answer 408.
            self.close()
            return
        limits = self.relay.limits
        if stall is Stall.HEAD:
            why = f"request head not complete within {limits.header_timeout_s:g} s"
        else:
            why = f"request body paused over {limits.body_timeout_s:g} s"
        log.debug("inference port: %s", why)
        if first is not None and first.conn is not None and first.conn.responded:
            self.abort()
            return
        if first is not None:
            first.abandon()
            self.exchanges.clear()
        self._refuse(RequestTimeout(why))

    def _refuse(self, error: MLNodeError) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if not self.exchanges:
            self.write(JsonAnswer.error(error).wire(keep_alive=False))
        self.close()

    def write(self, data: bytes) -> None:
        """Write to the client (sent at the end of the loop turn)."""
        if self.out is not None:
            self.out.write(data)

    # What the exchange answers, as HTTP/1.1 bytes (`ClientSide`).
    def send_continue(self) -> None:
        """The interim 100 answer."""
        self.write(_CONTINUE)

    def answer(self, reply: JsonAnswer, keep_alive: bool) -> None:
        """A complete answer of the node's own."""
        self.write(reply.wire(keep_alive))

    def answer_head(
        self, status: int, reason: bytes, fields: HeadFields, chunked: bool, keep_alive: bool
    ) -> None:
        """Status line and headers, with the framing the body needs."""
        self._chunked_out = chunked
        self.write(
            b"%b%b%b%b\r\n"
            % (
                status_head(status, reason),
                fields.block(),
                _CHUNKED if chunked else b"",
                b"" if keep_alive else _CLOSE,
            )
        )

    def answer_body(self, data: bytes) -> None:
        """A piece of the body, as a chunk when it has no length."""
        self.write(chunk(data) if self._chunked_out else data)

    def answer_end(self) -> None:
        """The last chunk of a chunked body."""
        if self._chunked_out:
            self._chunked_out = False
            self.write(b"0\r\n\r\n")

    def close(self) -> None:
        """Close after what was written."""
        if self.out is not None:
            self.out.close()

    def abort(self) -> None:
        """Cut the client's connection (an answer broke off where no error can be added)."""
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self, paused: bool, why: str = "engine") -> None:
        """Stop reading the client while any reason holds."""
        if self.transport is None or self.transport.is_closing():
            return
        was = bool(self._paused_by)
        if paused:
            self._paused_by.add(why)
        else:
            self._paused_by.discard(why)
        if was and not self._paused_by:
            self.transport.resume_reading()
        elif not was and self._paused_by:
            self.transport.pause_reading()
        if self.clock is not None:
            self.clock.set_paused(bool(self._paused_by))

    def pause_writing(self) -> None:
        """The client reads slower than the engine answers: hold the engine back."""
        self.write_paused = True
        if self.exchanges and self.exchanges[0].conn is not None:
            self.exchanges[0].conn.pause_reading(True)

    def resume_writing(self) -> None:
        """The client caught up."""
        self.write_paused = False
        if self.exchanges and self.exchanges[0].conn is not None:
            self.exchanges[0].conn.pause_reading(False)

    def exchange_done(self, exchange: Exchange) -> None:
        """Start the next pipelined exchange, or close when the client asked for it."""
        if self.exchanges and self.exchanges[0] is exchange:
            self.exchanges.popleft()
        if not exchange.keep_alive:
            self.close()
            return
        self.pause_reading(len(self.exchanges) > 1, "pipelined")
        if self.clock is not None:
            self.clock.set_busy(bool(self.exchanges))
        if self.exchanges:
            self.exchanges[0].start()

    # httptools callbacks
    def on_message_begin(self) -> None:
        """A request starts."""
        self._url = b""
        self._fields = HeadFields()
        if self.clock is not None:
            self.clock.data()

    def on_url(self, url: bytes) -> None:
        """Target (may come in pieces)."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line."""
        self.budget.line()
        self._fields.add(name, value)

    def on_headers_complete(self) -> None:
        """Queue the exchange; it starts now unless an earlier one is still answering."""
        if self.clock is not None:
            self.clock.head_done()
            self.clock.set_busy(True)
        exchange = Exchange(self, self.parser.get_method(), self._url, self._fields)
        exchange.headers_complete(
            self.parser.should_keep_alive(), self.parser.get_http_version() == "1.0"
        )
        self._parsing = exchange
        self.exchanges.append(exchange)
        if len(self.exchanges) == 1:
            exchange.start()
        else:
            self.pause_reading(True, "pipelined")

    def on_body(self, body: bytes) -> None:
        """A piece of the current request's body."""
        if self._parsing is not None:
            self._parsing.body(body)

    def on_message_complete(self) -> None:
        """The current request is complete."""
        exchange, self._parsing = self._parsing, None
        self.budget.reset()
        if self.clock is not None:
            self.clock.message_done()
        if exchange is not None:
            exchange.request_complete()
