"""One-port mode: ASGI requests through the inference port's proxy core, against a fake engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mlnode.infer.schemas import InferenceUpRequest
from mlnode.infer.testing.support import eventually


def scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [],
    }


class Client:
    """The ASGI server's side: body pieces to send, messages received, an optional disconnect."""

    def __init__(self, pieces: list[bytes], disconnect_after: int | None = None) -> None:
        self.pieces = list(pieces)
        self.sent: list[dict[str, Any]] = []
        self.disconnect_after = disconnect_after
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.pieces:
            piece = self.pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(self.pieces)}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        bodies = [m for m in self.sent if m["type"] == "http.response.body"]
        if self.disconnect_after is not None and len(bodies) >= self.disconnect_after:
            self.gone.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


async def test_json_stream_chunked_body_and_errors(make_service) -> None:
    service = await make_service()
    relay = service.engine_asgi
    idle = Client([b""])
    await relay(scope("GET", "/v1/models"), idle.receive, idle.send)
    assert idle.status == 503 and json.loads(idle.body)["error"]["code"] == "unavailable"

    await service.up(InferenceUpRequest(model="tiny", additional_args=["--chunks", "4"]))
    models = Client([b""])
    await relay(scope("GET", "/v1/models"), models.receive, models.send)
    assert models.status == 200 and json.loads(models.body)["data"][0]["id"] == "tiny"

    stream = Client([b'{"stream": true}'])
    await relay(scope("POST", "/v1/completions"), stream.receive, stream.send)
    events = [line for line in stream.body.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == 5 and events[-1] == b"data: [DONE]"
    assert len(stream.sent) >= 6, "the events arrive as separate ASGI messages"
    assert stream.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}

    expect = [(b"expect", b"100-continue"), (b"x-trace", b"7")]
    echo = Client([b'{"a": ', b"1}"])
    await relay(scope("POST", "/v1/echo", expect), echo.receive, echo.send)
    answer = json.loads(echo.body)
    assert echo.status == 200 and answer["body"] == '{"a": 1}'
    assert answer["headers"]["x-trace"] == "7" and "expect" not in answer["headers"]

    missing = Client([b""])
    await relay(scope("GET", "/nothing"), missing.receive, missing.send)
    assert missing.status == 404 and "error" in json.loads(missing.body)


async def test_client_disconnect_cancels_the_generation(make_service, client) -> None:
    service = await make_service()
    args = ["--chunks", "100", "--chunk-delay", "0.05"]
    await service.up(InferenceUpRequest(model="tiny", additional_args=args))
    engine = f"http://127.0.0.1:{service.inference_status().instances[0].port}"
    leaving = Client([b'{"stream": true}'], disconnect_after=2)
    await asyncio.wait_for(
        service.engine_asgi(scope("POST", "/v1/completions"), leaving.receive, leaving.send), 30
    )

    async def cancelled() -> int:
        return int((await client.get(f"{engine}/control/stats")).json()["cancelled"])

    counts: list[int] = []

    async def poll() -> None:
        while not counts or counts[-1] < 1:
            counts.append(await cancelled())
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 20)
    await eventually(lambda: service.balancer.total_in_flight() == 0)


class Stalling(Client):
    """A client that sends `pieces`, says more is coming, and then sends nothing."""

    async def receive(self) -> dict[str, Any]:
        if self.pieces:
            return {"type": "http.request", "body": self.pieces.pop(0), "more_body": True}
        await self.gone.wait()
        return {"type": "http.disconnect"}


def error_of(client: Client) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(client.body)["error"]
    return error


async def test_one_port_keeps_the_inference_port_limits(make_service) -> None:
    service = await make_service(
        max_body_bytes=4096, max_headers=10, max_header_bytes=2048, body_timeout_s=0.5
    )
    await service.up(InferenceUpRequest(model="tiny"))
    relay = service.engine_asgi

    # A declared length past the bound: 413 though the body never comes.
    declared = Stalling([])
    head = [(b"content-length", b"67108864")]
    await asyncio.wait_for(
        relay(scope("POST", "/tokenize", head), declared.receive, declared.send), 5
    )
    assert declared.status == 413 and "MLNODE_INFER_MAX_BODY_BYTES" in error_of(declared)["message"]
    assert declared.sent[-1]["more_body"] is False

    # A body without a length is cut once it passes the bound.
    chunked = Stalling([b"a" * 1000] * 6)
    await asyncio.wait_for(relay(scope("POST", "/tokenize"), chunked.receive, chunked.send), 5)
    assert chunked.status == 413 and error_of(chunked)["param"] == "body"

    # Too many header lines, or too many bytes of them: 431.
    many = Client([b""])
    lines = [(b"x-h%d" % i, b"v") for i in range(11)]
    await relay(scope("GET", "/v1/models", lines), many.receive, many.send)
    assert many.status == 431 and "MLNODE_INFER_MAX_HEADERS" in error_of(many)["message"]
    huge = Client([b""])
    await relay(scope("GET", "/v1/models", [(b"x-huge", b"a" * 3000)]), huge.receive, huge.send)
    assert huge.status == 431 and "MLNODE_INFER_MAX_HEADER_BYTES" in error_of(huge)["message"]

    # A body that pauses past the body timeout: 408, and the engine is not left waiting.
    slow = Stalling([b'{"a": '])
    head = [(b"content-length", b"100")]
    await asyncio.wait_for(relay(scope("POST", "/v1/echo", head), slow.receive, slow.send), 5)
    assert slow.status == 408 and error_of(slow)["code"] == "request_timeout"
    assert (b"connection", b"close") in slow.sent[0]["headers"], "the slow client is let go"
    await eventually(lambda: service.balancer.total_in_flight() == 0)

    # Within every bound the request is relayed.
    fine = Client([b"x" * 4000])
    await relay(scope("POST", "/v1/echo", lines[:9]), fine.receive, fine.send)
    assert fine.status == 200 and len(json.loads(fine.body)["body"]) == 4000


async def test_head_and_connection_named_headers(make_service) -> None:
    service = await make_service()
    await service.up(InferenceUpRequest(model="tiny"))
    relay = service.engine_asgi
    head = Client([b""])
    await relay(scope("HEAD", "/v1/models"), head.receive, head.send)
    assert head.status == 200 and head.body == b""
    assert head.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    private = [(b"connection", b"x-private"), (b"x-private", b"p"), (b"x-kept", b"k")]
    echo = Client([b"{}"])
    await relay(scope("POST", "/v1/echo", private), echo.receive, echo.send)
    seen = json.loads(echo.body)["headers"]
    assert "x-private" not in seen and seen["x-kept"] == "k"
    names = [name for name, _ in echo.sent[0]["headers"]]
    assert b"transfer-encoding" not in names and b"connection" not in names
