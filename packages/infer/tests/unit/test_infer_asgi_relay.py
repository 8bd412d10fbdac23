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
