"""BodyLimit: bodies over the limit are refused with 413 before the app sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlnode.api.limits import BodyLimit, declared_length


class Recorder:
    """An ASGI app that reads the whole body and answers with its length."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})


async def call(
    app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, bytes, int]:
    """Run one request; status, body and how many chunks the app side pulled."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return messages[pulled - 1] if pulled <= len(messages) else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, pulled


async def test_declared_length_over_the_limit_is_refused_unread() -> None:
    inner = Recorder()
    status, body, pulled = await call(BodyLimit(inner, 100), [(b"content-length", b"101")], [b"x"])
    assert status == 413 and pulled == 0 and not inner.bodies
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and "MLNODE_MAX_BODY_BYTES" in error["message"]


async def test_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    inner = Recorder()
    chunks = [b"x" * 40] * 10
    status, _, pulled = await call(BodyLimit(inner, 100), [], chunks)
    assert status == 413 and pulled == 3 and not inner.bodies


@pytest.mark.parametrize("size", [0, 1, 100])
async def test_bodies_within_the_limit_reach_the_app_whole(size: int) -> None:
    inner = Recorder()
    chunks = [b"a" * (size // 2), b"b" * (size - size // 2)]
    status, body, _ = await call(BodyLimit(inner, 100), [], chunks)
    assert status == 200 and inner.bodies == [b"a" * (size // 2) + b"b" * (size - size // 2)]
    assert body == b"%d" % size


def test_declared_length() -> None:
    assert declared_length([(b"content-length", b"12")]) == 12
    assert declared_length([(b"content-length", b"x")]) is None
    assert declared_length([]) is None


async def test_bodies_with_too_many_values_are_refused_unparsed() -> None:
    inner = Recorder()
    limited = BodyLimit(inner, 1 << 20, max_json_values=100)
    status, body, _ = await call(limited, [], [b"[" + b"0," * 100, b"0]"])
    assert status == 422 and not inner.bodies
    assert json.loads(body)["error"]["code"] == "too_many_values"
    status, _, _ = await call(limited, [], [b"[" + b"0," * 99 + b"0]"])
    assert status == 200 and len(inner.bodies) == 1
    exempt = BodyLimit(inner, 1 << 20, max_json_values=100, exempt=lambda path: path == "/x")
    status, _, _ = await call(exempt, [], [b"[" + b"0," * 200 + b"0]"])
    assert status == 200


async def test_exempt_paths_reach_the_app_unread() -> None:
    """One-port engine routes: the exchange core bounds their bodies, streamed as they come."""
    inner = Recorder()
    exempt = BodyLimit(inner, 100, exempt=lambda path: path == "/x")
    status, body, pulled = await call(exempt, [(b"content-length", b"300")], [b"x" * 150] * 2)
    assert status == 200 and body == b"300" and pulled == 2
    status, _, pulled = await call(BodyLimit(inner, 100), [(b"content-length", b"300")], [b"x"])
    assert status == 413 and pulled == 0
