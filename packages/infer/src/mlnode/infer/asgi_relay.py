"""One-port mode: the proxy core behind an ASGI app, so the REST port serves the engine routes too.

A network node with a single base URL calls `/v1/*` and `/tokenize` on the REST port. Each ASGI
request becomes one `Exchange` of the inference port's `Relay`, driven by an `AsgiClient`: the
ASGI scope is its head, `receive` its body, and what the exchange answers goes to `send` as ASGI
messages; no HTTP bytes in between. Balancing, routing, auth, errors, validation and streaming
are the exchange core's own. The REST port's server frames the answer and the request body; the
inference port's limits hold here too: a head past them is 431, a declared body past the bound
413 before any of it is read, a body that pauses past `MLNODE_INFER_BODY_TIMEOUT_S` 408.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from starlette.types import Receive, Scope, Send

from mlnode.common.errors import BadRequest, MLNodeError
from mlnode.common.http.answers import JsonAnswer
from mlnode.common.http.limits import HeaderTooLarge, RequestTimeout
from mlnode.infer.exchange import Exchange
from mlnode.infer.headers import HeadFields
from mlnode.infer.limits import HeadBudget
from mlnode.infer.proxy import Relay

log = logging.getLogger(__name__)

Message = dict[str, Any]
#: Answer bytes queued for `send` past which the engine is no longer read.
_HIGH_WATER = 1 << 20
_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class AsgiClient:
    """The ASGI front end of one exchange (a `ClientSide`)."""

    def __init__(self, relay: Relay, receive: Receive, send: Send) -> None:
        self.relay = relay
        self.tasks: set[asyncio.Task[None]] = set()
        self.write_paused = False
        self.exchange: Exchange | None = None
        self._receive = receive
        self._send = send
        self._messages: deque[Message] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._paused_by: set[str] = set()
        self._started = False
        self._ended = False
        self._closed = False

    async def serve(self, scope: Scope) -> None:
        """Relay the request of `scope` and send its answer."""
        exchange = self._begin(scope)
        feeding = asyncio.get_running_loop().create_task(self._feed(exchange))
        try:
            await self._pump()
        finally:
            feeding.cancel()
            if not exchange.finished:
                exchange.abandon()
            for task in self.tasks:
                task.cancel()

    def _begin(self, scope: Scope) -> Exchange:
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        method = scope["method"].encode()
        fields = HeadFields()
        # The server answers `Expect: 100-continue` itself when the body is first received.
        headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"expect"]
        for name, value in headers:
            fields.add(name, value)
        # The server took the client's framing off; a body without a length goes on chunked.
        fields.chunked = not fields.has_length
        exchange = self.exchange = Exchange(self, method, target, fields)
        refusal = self._head_refusal(target, headers)
        if refusal is not None:
            exchange.local = JsonAnswer.error(refusal)
            exchange.keep_alive = False
        else:
            exchange.headers_complete(keep_alive=False, http10=False)
        exchange.start()
        return exchange

    def _head_refusal(
        self, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> MLNodeError | None:
        """431 for a head past the inference port's limits, counted as its bytes would be."""
        budget = HeadBudget(self.relay.limits)
        try:
            for _ in headers:
                budget.line()
        except HeaderTooLarge as exc:
            return exc
        size = len(target) + 16 + sum(len(name) + len(value) + 4 for name, value in headers)
        return budget.exhausted() if size > budget.room() else None

    async def _feed(self, exchange: Exchange) -> None:
        """The body into the exchange (408 when it pauses too long); then wait for a disconnect."""
        try:
            await self._read_body(exchange)
        except Exception:
            log.exception("inference proxy failed on a one-port request")
            exchange.abandon()
            self._answer_json(
                JsonAnswer.error(BadRequest("the proxy could not handle this request"))
            )
            self.close()

    async def _read_body(self, exchange: Exchange) -> None:
        timeout = self.relay.limits.body_timeout_s
        more = True
        while more:
            await self._reading.wait()
            try:
                message = await asyncio.wait_for(self._receive(), timeout)
            except TimeoutError:
                self._stalled(exchange, f"request body paused over {timeout:g} s")
                return
            if message["type"] == "http.disconnect":
                self._gone(exchange)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if body:
                exchange.body(body)
            if not more:
                exchange.request_complete()
        if (await self._receive())["type"] == "http.disconnect":
            self._gone(exchange)

    def _stalled(self, exchange: Exchange, why: str) -> None:
        if exchange.finished or self._closed:
            return
        if exchange.conn is not None and exchange.conn.responded:
            self.abort()
            return
        exchange.abandon()
        # Unlike a 413 (its body is read away), a stalled client is let go, as on the port.
        self._answer_json(JsonAnswer.error(RequestTimeout(why)), _CLOSE)
        self.close()

    def _gone(self, exchange: Exchange) -> None:
        """The client left: the exchange is abandoned (the engine connection drops)."""
        exchange.abandon()
        self.close()

    async def _pump(self) -> None:
        """Send the answer's messages as the exchange makes them, until it ends or is cut."""
        while True:
            while self._messages:
                message = self._messages.popleft()
                await self._send(message)
                if message["type"] == "http.response.body":
                    self._queued -= len(message["body"])
                    if self.write_paused and self._queued < _HIGH_WATER // 2:
                        self._hold_engine(False)
                    if not message["more_body"]:
                        return
            if self._closed:
                if self._started:
                    # An answer the proxy cut: end it as far as it went.
                    await self._send(dict(_END))
                return
            self._wake.clear()
            await self._wake.wait()

    def _put(self, message: Message) -> None:
        self._messages.append(message)
        self._wake.set()

    def _hold_engine(self, paused: bool) -> None:
        self.write_paused = paused
        exchange = self.exchange
        if exchange is not None and exchange.conn is not None:
            exchange.conn.pause_reading(paused)

    # What the exchange answers, as ASGI messages (`ClientSide`).
    def send_continue(self) -> None:
        """Nothing to do: the server sends 100 Continue when the body is first received."""

    def answer(self, reply: JsonAnswer, keep_alive: bool) -> None:
        """A complete answer of the node's own (the server keeps the connection as it sees fit)."""
        self._answer_json(reply)

    def _answer_json(self, reply: JsonAnswer, *extra: tuple[bytes, bytes]) -> None:
        if self._started:
            return
        length = (b"content-length", b"%d" % len(reply.payload))
        self.answer_head_pairs(reply.status, [_JSON, length, *extra])
        self.answer_body(reply.payload)
        self.answer_end()

    def answer_head(
        self, status: int, reason: bytes, fields: HeadFields, chunked: bool, keep_alive: bool
    ) -> None:
        """The engine's status and headers; the server does the framing."""
        self.answer_head_pairs(status, fields.pairs())

    def answer_head_pairs(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Start the answer."""
        self._started = True
        self._put({"type": "http.response.start", "status": status, "headers": headers})

    def answer_body(self, data: bytes) -> None:
        """A piece of the body; past the high-water mark the engine is held back."""
        self._queued += len(data)
        self._put({"type": "http.response.body", "body": data, "more_body": True})
        if self._queued > _HIGH_WATER and not self.write_paused:
            self._hold_engine(True)

    def answer_end(self) -> None:
        """The answer is complete."""
        if not self._ended:
            self._ended = True
            self._put(dict(_END))

    def pause_reading(self, paused: bool, why: str = "engine") -> None:
        """Stop receiving the body while any reason holds."""
        if paused:
            self._paused_by.add(why)
        else:
            self._paused_by.discard(why)
        if self._paused_by:
            self._reading.clear()
        else:
            self._reading.set()

    def close(self) -> None:
        """Nothing more will be answered."""
        self._closed = True
        self._wake.set()

    def abort(self) -> None:
        """The answer broke off."""
        self.close()

    def exchange_done(self, exchange: Exchange) -> None:
        """Request and answer are complete: this front end serves one exchange only."""
        self.close()


class EngineAsgi:
    """ASGI app relaying every request through the inference port's exchange core."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def relays(self, path: str) -> bool:
        """True for a path of the engine's API (what the REST port hands to this app)."""
        return self.relay.routes.relays(path.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        await AsgiClient(self.relay, receive, send).serve(scope)
