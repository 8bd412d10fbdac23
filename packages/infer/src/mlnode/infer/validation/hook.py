"""Validation in the proxy: which exchanges it touches and what it does to them.

`ValidationGate` belongs to the relay: the engines' logprobs mode and whether they were started
with the forcing plugin (set when engines launch), the probe results per engine, the bounds.
`ExchangeRewrite` belongs to one `POST /v1/chat/completions` or `/v1/completions`: it buffers the
request body, rewrites it (possibly after asking the engine to tokenize), and rewrites the ids
in a 200 answer, whole for JSON and line by line for server-sent events.

Status codes follow the network node's reading of them: 400/422 on a replay count as a pass for
the executor, so they are kept for bodies that are really malformed; a replay this node cannot
force (no plugin, a failed self-check, another logprobs mode than the engine's) is a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mlnode.common.engines import EngineClient
from mlnode.common.errors import InvalidRequest, MLNodeError, Unavailable
from mlnode.infer.balancer import Backend
from mlnode.infer.headers import HeadFields
from mlnode.infer.validation import engine_calls
from mlnode.infer.validation.replay import (
    BodyTooLarge,
    FieldLimits,
    Replay,
    engine_body,
    fill,
    parse_body,
    read_request,
)
from mlnode.infer.validation.token_ids import ChatAnswerRewriter, SseRewriter, rewrite_json

PATHS = {b"/v1/chat/completions": True, b"/v1/completions": False}


_TOKENIZE_CONCURRENCY = 8
# Texts of one replay sent to /tokenize (one call each): past this the replay is refused, so a
# body cannot keep the engine tokenizing for long. Executors' ids are decimal (2026 nodes).
MAX_TEXTS = 8192
# Bodies past this are parsed in a worker thread: the loop keeps serving other clients meanwhile.
PARSE_ON_LOOP_BYTES = 256 << 10


class ValidationGate:
    """What every exchange's rewrite shares."""

    def __init__(
        self,
        backends: Callable[[], tuple[Backend, ...]],
        client: Callable[[], EngineClient],
        max_body_bytes: int = 4 << 20,
        engine_timeout_s: float = 30.0,
        rewrite_token_ids: bool = True,
        field_limits: FieldLimits | None = None,
    ) -> None:
        self.backends = backends
        self.client = client
        self.max_body_bytes = max_body_bytes
        self.field_limits = field_limits or FieldLimits()
        self.engine_timeout_s = engine_timeout_s
        self.rewrite_token_ids = rewrite_token_ids
        self.logprobs_mode: str | None = None
        self.forcing = False
        self._probes: dict[Backend, tuple[bool, str]] = {}

    def configure(self, logprobs_mode: str | None, forcing: bool) -> None:
        """The engines now launching run in `logprobs_mode`, with the plugin or not."""
        self.logprobs_mode = logprobs_mode
        self.forcing = forcing
        self._probes.clear()

    def begin(self, method: bytes, path: bytes) -> ExchangeRewrite | None:
        """A rewrite for this exchange, or None when it is relayed untouched."""
        chat = PATHS.get(path)
        if chat is None or method != b"POST":
            return None
        return ExchangeRewrite(self, chat)

    def check_mode(self, replay: Replay) -> None:
        """503 when the request asks for logprobs of another kind than the engine reports."""
        wanted = replay.logprobs_mode
        if wanted is not None and wanted != self.logprobs_mode:
            raise Unavailable(
                f"logprobs_mode {wanted!r} asked, but the engines run "
                f"{self.logprobs_mode or 'an unknown mode'}"
            )

    def known_ready(self) -> bool:
        """Every serving engine already passed the probe (no need to ask again)."""
        backends = self.backends()
        return bool(backends) and all(self._probes.get(b, (False, ""))[0] for b in backends)

    async def ensure_forcing(self) -> None:
        """503 unless every serving engine can force tokens.

        Each engine is asked once whatever the node's setting says, so one without the plugin
        is found out.
        """
        backends = self.backends()
        if not backends:
            raise Unavailable("no inference engine is serving")
        for backend in backends:
            if backend not in self._probes:
                result = await engine_calls.probe(self.client(), backend, self.engine_timeout_s)
                self._probes[backend] = result
            ready, reason = self._probes[backend]
            if not ready:
                if not self.forcing:
                    reason += " (MLNODE_INFER_FORCING is off, or speculative decoding excludes it)"
                raise Unavailable(f"forced replay is unavailable on {backend.key}: {reason}")

    async def tokenize(self, replay: Replay) -> dict[int, list[int]]:
        """The engine's ids of every text `replay` needs tokenized."""
        backends = self.backends()
        if not backends:
            raise Unavailable("no inference engine is serving")
        if len(replay.texts) > MAX_TEXTS:
            raise InvalidRequest(
                f"enforced_tokens has {len(replay.texts)} non-numeric tokens, at most "
                f"{MAX_TEXTS} are tokenized",
                param="enforced_tokens",
            )
        limit = asyncio.Semaphore(_TOKENIZE_CONCURRENCY)
        model = replay.body.get("model")
        client = self.client()

        async def one(index: int, text: str) -> tuple[int, list[int]]:
            async with limit:
                ids = await engine_calls.tokenize(
                    client, backends[0], model, text, self.engine_timeout_s
                )
            return index, ids

        found = await asyncio.gather(*(one(i, t) for i, t in replay.texts.items()))
        return dict(found)


class ExchangeRewrite:
    """The validation layer's part in one chat/completions exchange."""

    __slots__ = (
        "_body",
        "_chat_json",
        "_json",
        "_replay",
        "_sse",
        "chat",
        "gate",
        "ids_in_answer",
        "ready",
        "too_large",
    )

    def __init__(self, gate: ValidationGate, chat: bool) -> None:
        self.gate = gate
        self.chat = chat
        self._body = bytearray()
        self.too_large = False
        self.ready = False
        self.ids_in_answer = False
        self._sse: SseRewriter | None = None
        self._json: bytearray | None = None
        self._chat_json: ChatAnswerRewriter | None = None
        self._replay: Replay | None = None

    # The request.
    def feed(self, data: bytes) -> None:
        """A piece of the request body (held until the body is complete)."""
        if self.too_large:
            return
        self._body += data
        if len(self._body) > self.gate.max_body_bytes:
            self.too_large = True
            self._body = bytearray()

    def prepare_now(self) -> bytes | MLNodeError | None:
        """The engine's body, an error to answer, or None when `prepare` must do the work."""
        if self.too_large:
            return too_large(self.gate.max_body_bytes)
        if len(self._body) > PARSE_ON_LOOP_BYTES:
            return None
        return self._plan(parse_body(bytes(self._body)))

    def _plan(self, body: dict[str, Any] | None) -> bytes | MLNodeError | None:
        if body is None:
            return bytes(self._body)
        try:
            replay = read_request(body, self.chat, self.gate.field_limits)
            self.gate.check_mode(replay)
        except MLNodeError as exc:
            return exc
        self.ids_in_answer = replay.logprobs = replay.logprobs and self.gate.rewrite_token_ids
        if replay.forcing and (replay.texts or not self.gate.known_ready()):
            self._replay = replay
            return None
        ids = fill(replay, {}) if replay.forcing else None
        return engine_body(replay, ids) if self._needs_rewrite(replay) else bytes(self._body)

    def _needs_rewrite(self, replay: Replay) -> bool:
        return replay.forcing or self.ids_in_answer or replay.logprobs_mode is not None

    async def prepare(self) -> bytes | MLNodeError:
        """The slow path of `prepare_now`: parse a big body off the loop, probe, tokenize."""
        if self._replay is None:
            # The walk over a big body's fields (sizes, ids) goes to the thread with its parse.
            planned = await asyncio.to_thread(lambda: self._plan(parse_body(bytes(self._body))))
            if planned is not None:
                return planned
        replay = self._replay
        assert replay is not None
        try:
            await self.gate.ensure_forcing()
            tokenized = await self.gate.tokenize(replay) if replay.texts else {}
        except MLNodeError as exc:
            return exc
        ids = fill(replay, tokenized)
        if len(self._body) > PARSE_ON_LOOP_BYTES:
            return await asyncio.to_thread(engine_body, replay, ids)
        return engine_body(replay, ids)

    # The answer.
    def response_head(self, status: int, fields: HeadFields) -> HeadFields:
        """Headers for the client; a rewritten answer loses its length (it goes out chunked)."""
        if not self.ids_in_answer or status != 200:
            return fields
        if fields.event_stream:
            self._sse = SseRewriter(chat=self.chat)
        elif self.chat:
            self._chat_json = ChatAnswerRewriter()
        else:
            self._json = bytearray()
        return without_length(fields)

    def response_body(self, data: bytes) -> bytes:
        """What of `data` goes to the client now."""
        if self._sse is not None:
            return self._sse.feed(data)
        if self._chat_json is not None:
            return self._chat_json.feed(data)
        if self._json is not None:
            self._json += data
            return b""
        return data

    def response_end(self) -> bytes:
        """The rest of the answer."""
        if self._sse is not None:
            return self._sse.close()
        if self._chat_json is not None:
            return self._chat_json.close()
        if self._json is not None:
            return rewrite_json(bytes(self._json))
        return b""


def too_large(limit: int) -> BodyTooLarge:
    """The 413 for a relayed body over `limit` bytes."""
    return BodyTooLarge(
        f"request body is over {limit} bytes (MLNODE_INFER_MAX_BODY_BYTES)", param="body"
    )


def without_length(fields: HeadFields) -> HeadFields:
    """`fields` without Content-Length."""
    out = HeadFields()
    out.event_stream = fields.event_stream
    out.connection_names = fields.connection_names
    out.lines = [line for line in fields.lines if not line.lower().startswith(b"content-length:")]
    return out


def with_length(fields: HeadFields, length: int) -> HeadFields:
    """Request `fields` for a rewritten body of `length` bytes (no longer chunked)."""
    out = without_length(fields)
    out.expect_continue = fields.expect_continue
    out.lines.append(b"content-length: %d\r\n" % length)
    out.has_length = True
    return out
