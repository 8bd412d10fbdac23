"""One request and its answer: the proxy core both front ends drive.

An `Exchange` takes the head and body of one request from its front end, routes it (relayed to an
engine, rewritten for validation, or answered here), writes it to the engine's connection
directly and streams the answer back through the front end, with flow control both ways.

The front end is a `ClientSide`: the inference port's `ClientConnection` (asyncio protocol,
httptools, HTTP/1.1 bytes on the socket) or one-port mode's `AsgiClient` (ASGI `receive` and
`send` of the REST port's server). The exchange tells it what to answer (a status, headers, body
pieces, an end, or a complete `JsonAnswer`), never how to frame it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from mlnode.common.errors import (
    EngineFailed,
    MLNodeError,
    Unavailable,
)
from mlnode.common.http.answers import JsonAnswer
from mlnode.infer.answers import chunk, local_answer
from mlnode.infer.balancer import Backend
from mlnode.infer.headers import HeadFields
from mlnode.infer.paths import normalise_target
from mlnode.infer.routing import Route
from mlnode.infer.upstream import EngineConnection, UpstreamError
from mlnode.infer.validation.hook import ExchangeRewrite, too_large, with_length

if TYPE_CHECKING:
    from mlnode.infer.proxy import Relay

log = logging.getLogger(__name__)

_REPLAY_LIMIT = 1 << 20


class ClientSide(Protocol):
    """What an exchange needs of the client's side of the connection (its front end)."""

    relay: Relay
    tasks: set[asyncio.Task[None]]
    #: The client reads slower than the answer comes: the engine is held back.
    write_paused: bool

    def send_continue(self) -> None:
        """Tell a client waiting on `Expect: 100-continue` to send its body."""

    def answer(self, reply: JsonAnswer, keep_alive: bool) -> None:
        """A complete answer the node gives itself."""

    def answer_head(
        self, status: int, reason: bytes, fields: HeadFields, chunked: bool, keep_alive: bool
    ) -> None:
        """The engine's status and headers; `chunked`: the body has no length (nor close)."""

    def answer_body(self, data: bytes) -> None:
        """A piece of the answer's body."""

    def answer_end(self) -> None:
        """The answer is complete."""

    def pause_reading(self, paused: bool, why: str = "engine") -> None:
        """Stop reading the client while any reason holds."""

    def close(self) -> None:
        """Close after what was answered."""

    def abort(self) -> None:
        """Cut the client off (an answer broke off where no error can be added)."""

    def exchange_done(self, exchange: Exchange) -> None:
        """Both the request and its answer are complete."""


class Exchange:
    """One request and its answer; forwards the body to the engine as it arrives."""

    __slots__ = (
        "backend",
        "chunked_out",
        "client",
        "close_delimited",
        "conn",
        "event_stream",
        "fields",
        "finished",
        "http10",
        "keep_alive",
        "local",
        "method",
        "pending",
        "pending_size",
        "received",
        "replay",
        "replay_size",
        "request_done",
        "response_done",
        "rewrite",
        "started",
        "url",
    )

    def __init__(self, client: ClientSide, method: bytes, url: bytes, fields: HeadFields):
        self.client = client
        self.method = method
        self.url = url
        self.fields = fields
        self.keep_alive = True
        self.http10 = False
        self.request_done = False
        self.response_done = False
        self.started = False
        self.backend: Backend | None = None
        self.conn: EngineConnection | None = None
        self.local: JsonAnswer | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.received = 0
        self.replay: list[bytes] | None = None
        self.replay_size = 0
        self.chunked_out = False
        self.close_delimited = False
        self.event_stream = False
        self.finished = False
        self.rewrite: ExchangeRewrite | None = None

    # The request side, driven by the client's parser.
    def headers_complete(self, keep_alive: bool, http10: bool) -> None:
        """Route the request; `/v1/*` goes to an engine as soon as this exchange is active."""
        self.keep_alive = keep_alive
        self.http10 = http10
        relay = self.client.relay
        try:
            self.url = relay.routes.target(normalise_target(self.url))
        except MLNodeError as exc:
            self.local = JsonAnswer.error(exc)
            self.keep_alive = False
            return
        path = self.url.split(b"?", 1)[0]
        route = relay.routes.route(path, self.fields.authorization)
        if route is not Route.ENGINE:
            self.local = local_answer(route, path, relay.serving())
        elif (self.fields.content_length or 0) > relay.limits.max_body_bytes:
            self._refuse_body()
        elif relay.validation is not None:
            self.rewrite = relay.validation.begin(self.method, path)

    def body(self, data: bytes) -> None:
        """A piece of the request body."""
        limit = self.client.relay.limits.max_body_bytes
        self.received += len(data)
        if self.local is not None or self.response_done:
            if not self.keep_alive and self.received > 2 * limit:
                # A refused body is read away for its answer's sake, but not without end.
                self.client.close()
            return
        if self.received > limit:
            self._refuse_body()
            return
        if self.rewrite is not None:
            self.rewrite.feed(data)
            return
        piece = chunk(data) if self.fields.chunked else data
        if self.conn is None:
            self.pending.append(piece)
            self.pending_size += len(piece)
            if self.pending_size > _REPLAY_LIMIT:
                # No engine connection yet: hold the client back rather than its whole body.
                self.client.pause_reading(True, "connecting")
            return
        self._send(piece)

    def request_complete(self) -> None:
        """The client sent all of the request."""
        self.request_done = True
        if self.rewrite is not None and self.local is None:
            self._rewrite_request()
            return
        if self.fields.chunked and self.local is None and not self.response_done:
            if self.conn is None:
                self.pending.append(b"0\r\n\r\n")
            else:
                self._send(b"0\r\n\r\n")
        if self.started and self.local is not None and not self.response_done:
            self._answer_locally()
        if self.response_done:
            self._done()

    def _refuse_body(self) -> None:
        """Over the body bound: drop what reached the engine, answer 413, read the rest away."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
            if conn.responded:
                self.client.abort()
                return
        self.pending, self.pending_size, self.rewrite = [], 0, None
        self.client.pause_reading(False, "connecting")
        self._release()
        self.keep_alive = False
        self.local = JsonAnswer.error(too_large(self.client.relay.limits.max_body_bytes))
        if self.started:
            self._answer_locally()

    def _send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.write(data)
        if self.replay is not None:
            self.replay_size += len(data)
            if self.replay_size <= _REPLAY_LIMIT:
                self.replay.append(data)
            else:
                self.replay = None

    # Activation: the connection's oldest exchange runs; pipelined ones wait their turn.
    def start(self) -> None:
        """Become the active exchange of the client connection."""
        self.started = True
        if self.local is not None and not self.keep_alive:
            # A refusal goes out before the body: a client that waits for 100-continue sends
            # none, one that does not is read to the end (lingering) so it gets the answer.
            self._answer_locally()
            if self.fields.expect_continue and not self.request_done:
                self.client.close()
            return
        if self.fields.expect_continue and not self.request_done:
            self.client.send_continue()
        if self.local is not None:
            if self.request_done:
                self._answer_locally()
            return
        if self.rewrite is None or self.rewrite.ready:
            self._forward()

    def _forward(self) -> None:
        backend = self.client.relay.balancer.acquire()
        if backend is None:
            self.local = JsonAnswer.error(Unavailable("no inference engine is serving"))
            if self.request_done:
                self._answer_locally()
            return
        self.backend = backend
        conn = self.client.relay.pool.take_idle(f"{backend.host}:{backend.port}")
        if conn is not None:
            self._attach(conn)
        else:
            self._spawn(self._connect(backend))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task the client side cancels when it goes away."""
        tasks = self.client.tasks
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # Validation: the body is read whole, rewritten, then forwarded with its new length.
    def _rewrite_request(self) -> None:
        assert self.rewrite is not None
        outcome = self.rewrite.prepare_now()
        if outcome is not None:
            self._rewritten(outcome)
            return
        self._spawn(self._rewrite_slowly(self.rewrite))

    async def _rewrite_slowly(self, rewrite: ExchangeRewrite) -> None:
        self._rewritten(await rewrite.prepare())

    def _rewritten(self, outcome: bytes | MLNodeError) -> None:
        assert self.rewrite is not None
        self.rewrite.ready = True
        if self.finished:
            return
        if isinstance(outcome, MLNodeError):
            self.local = JsonAnswer.error(outcome)
            if self.started:
                self._answer_locally()
            return
        self.fields = with_length(self.fields, len(outcome))
        self.pending = [outcome]
        if self.started:
            self._forward()

    async def _open(self, backend: Backend) -> EngineConnection | None:
        """A connection to `backend`, or None when it failed (answered) or is no longer wanted."""
        try:
            conn = await self.client.relay.pool.connect(backend.host, backend.port)
        except UpstreamError as exc:
            self._fail_before_answer(f"engine {backend.key} failed: {exc}")
            return None
        if self.finished or self.local is not None:
            conn.abort()
            return None
        return conn

    async def _connect(self, backend: Backend) -> None:
        conn = await self._open(backend)
        if conn is not None:
            self._attach(conn)

    def _attach(self, conn: EngineConnection) -> None:
        assert self.backend is not None
        self.conn = conn
        head = b"%b %b HTTP/1.1\r\nhost: %b:%d\r\n%b%b\r\n" % (
            self.method,
            self.url,
            self.backend.host.encode(),
            self.backend.port,
            self.fields.block(),
            b"transfer-encoding: chunked\r\n" if self.fields.chunked else b"",
        )
        pending, self.pending, self.pending_size = self.pending, [], 0
        self.replay = [head, *pending] if conn.reused else None
        self.replay_size = sum(map(len, pending))
        conn.start(self, head + b"".join(pending))
        self.client.pause_reading(False, "connecting")
        if self.client.write_paused:
            conn.pause_reading(True)

    # The answer, driven by the engine connection (`ResponseHandler`).
    def on_response_head(self, status: int, reason: bytes, fields: HeadFields) -> None:
        """Pass the status and headers on; an answer without a length goes out chunked."""
        self.replay = None
        if self.rewrite is not None:
            fields = self.rewrite.response_head(status, fields)
        self.event_stream = fields.event_stream
        bodyless = self.method == b"HEAD" or status in (204, 304)
        if not bodyless and not fields.has_length:
            if self.http10:
                self.close_delimited = True
                self.keep_alive = False
            else:
                self.chunked_out = True
        self.client.answer_head(status, reason, fields, self.chunked_out, self.keep_alive)
        if self.method == b"HEAD":
            # httptools cannot be told the request was HEAD; do not wait for a body that won't come.
            self.client.answer_end()
            self._response_complete(reused=False)

    def on_response_body(self, data: bytes) -> None:
        """Pass a piece of the body on to the client."""
        if self.rewrite is not None:
            data = self.rewrite.response_body(data)
        if data:
            self.client.answer_body(data)

    def on_response_end(self) -> None:
        """Finish the client's answer; the engine connection goes back to the pool."""
        if self.rewrite is not None and (tail := self.rewrite.response_end()):
            self.client.answer_body(tail)
        self.client.answer_end()
        self._response_complete(reused=self.request_done)

    def on_upstream_lost(self, why: str) -> None:
        """Retry a stale kept-alive connection, else answer 502 or end the answer with an error."""
        conn, self.conn = self.conn, None
        if conn is not None and self.replay is not None and self.backend is not None:
            replay = self.replay
            log.debug("kept-alive connection to %s was closed; retrying", conn.key)
            self._spawn(self._retry(self.backend, replay))
            return
        key = self.backend.key if self.backend is not None else "?"
        if conn is None or not conn.responded:
            self._fail_before_answer(f"engine {key} failed: {why}")
            return
        error = EngineFailed(f"engine {key} failed mid-response: {why}")
        if self.event_stream and self.chunked_out:
            self.client.answer_body(b"data: " + json.dumps(error.to_body()).encode() + b"\n\n")
            self.client.answer_end()
            self._response_complete(reused=False)
            return
        log.warning("%s", error.message)
        self.client.abort()

    async def _retry(self, backend: Backend, replay: list[bytes]) -> None:
        conn = await self._open(backend)
        if conn is None:
            return
        self.conn = conn
        self.replay = None
        pending, self.pending, self.pending_size = self.pending, [], 0
        conn.start(self, b"".join(replay + pending))
        self.client.pause_reading(False, "connecting")
        if self.client.write_paused:
            conn.pause_reading(True)

    def on_upstream_pause(self, paused: bool) -> None:
        """The engine reads our body slower than the client sends it."""
        self.client.pause_reading(paused)

    # Endings.
    def _fail_before_answer(self, why: str) -> None:
        self.conn = None
        self.pending, self.pending_size = [], 0
        self.client.pause_reading(False, "connecting")
        self.local = JsonAnswer.error(EngineFailed(why))
        self._release()
        if self.request_done:
            self._answer_locally()

    def _answer_locally(self) -> None:
        assert self.local is not None
        self._release()
        self.client.answer(self.local, self.keep_alive)
        self.response_done = True
        if self.request_done:
            self._done()

    def _response_complete(self, reused: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            if reused:
                self.client.relay.pool.give_back(conn)
            else:
                conn.abort()
        self._release()
        self.response_done = True
        if self.close_delimited:
            self.keep_alive = False
        if self.request_done:
            self._done()

    def _release(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            self.client.relay.balancer.release(backend)

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self.client.exchange_done(self)

    def abandon(self) -> None:
        """The client went away: drop the engine connection, which cancels the generation."""
        self.finished = True
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        self._release()
