"""`BodyLimit`: request bodies beyond `MLNODE_MAX_BODY_BYTES` are refused with 413 before use.

A declared `Content-Length` over the limit is refused without reading a byte; a chunked body is
read up to the limit and refused as soon as it passes it. The body is then handed to the app
from the one buffer, so a request costs at most the limit (and the app's own parse).
"""

from __future__ import annotations

import json

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


class BodyLimit:
    """Refuse bodies over `max_bytes` with 413 naming the limit and its setting."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body exceeds {self.max_bytes} bytes (MLNODE_MAX_BODY_BYTES)", param="body"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then read at most the limit before calling the app."""
        if scope["type"] != "http":
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
        body = {"type": "http.request", "body": b"".join(parts), "more_body": False}
        parts.clear()
        await self.app(scope, _replay(body, receive), send)


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
