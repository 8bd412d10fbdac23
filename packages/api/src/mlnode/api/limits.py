"""`BodyLimit`: request bodies beyond `MLNODE_MAX_BODY_BYTES` are refused with 413 before use.

A declared `Content-Length` over the limit is refused without reading a byte; a chunked body is
read up to the limit and refused as soon as it passes it. The body is then handed to the app
from the one buffer, so a request costs at most the limit (and the app's own parse).

The parse is bounded too: a body with more than `max_json_values` commas (an upper bound on the
values of a JSON array or object, counted in C at memory speed) is refused with 422 before it
is parsed. `json.loads` holds the GIL for the whole body, so no thread could keep it off the
event loop the REST and inference ports share (4 MiB of `[0,0,...]` takes ~0.35 s).

`exempt` paths (the engine routes one-port mode relays) go to the app unread: the inference
port's exchange core bounds them as it does on its own port (`MLNODE_INFER_MAX_BODY_BYTES`, its
413 before the body is read) and streams them to the engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlnode.common.errors import MLNodeError


class PayloadTooLarge(MLNodeError):
    """The request body is larger than the node accepts."""

    status_code = 413
    code = "payload_too_large"


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length header's value, None when absent or unreadable."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class TooManyValues(MLNodeError):
    """The JSON body holds more values than the node parses."""

    status_code = 422
    code = "too_many_values"


class BodyLimit:
    """Refuse bodies over `max_bytes` with 413 naming the limit and its setting."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_json_values: int | None = None,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_values = max_json_values
        self.exempt = exempt

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body exceeds {self.max_bytes} bytes (MLNODE_MAX_BODY_BYTES)", param="body"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then read at most the limit before calling the app."""
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope["path"])):
            await self.app(scope, receive, send)
            return
        length = declared_length(scope["headers"])
        if length is not None and length > self.max_bytes:
            await _answer(send, self._error())
            return
        if length == 0 or (length is None and scope["method"] in ("GET", "HEAD", "DELETE")):
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, self._error())
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        whole = b"".join(parts)
        parts.clear()
        if self._too_many_values(whole):
            await _answer(send, self._values_error())
            return
        body = {"type": "http.request", "body": whole, "more_body": False}
        await self.app(scope, _replay(body, receive), send)

    def _too_many_values(self, body: bytes) -> bool:
        if self.max_json_values is None:
            return False
        return body.count(b",") >= self.max_json_values

    def _values_error(self) -> TooManyValues:
        return TooManyValues(
            f"request body holds more than {self.max_json_values} JSON values "
            "(MLNODE_MAX_JSON_VALUES)",
            param="body",
        )


def _replay(first: Message, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


async def _answer(send: Send, error: MLNodeError) -> None:
    body = json.dumps(error.to_body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
