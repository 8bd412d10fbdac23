"""EngineClient against a real local HTTP server: answers, the whole-call deadline, the size cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from mlnode.common.engines import EngineClient
from mlnode.common.errors import EngineFailed


@dataclass(frozen=True)
class Engine:
    """An `EngineEndpoint` on loopback."""

    port: int
    key: str = "e0"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _head(status: int, length: int | None) -> bytes:
    framing = f"content-length: {length}" if length is not None else "connection: close"
    return f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{framing}\r\n\r\n".encode()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Routes by path: /json echoes the body, /declared-big, /endless, /drip, /status/N."""
    try:
        line = await reader.readline()
        path = line.split()[1].decode()
        length = 0
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b"{}"
        if path == "/json":
            answer = json.dumps({"echo": json.loads(body)}).encode()
            writer.write(_head(200, len(answer)) + answer)
        elif path.startswith("/status/"):
            writer.write(_head(int(path.rsplit("/", 1)[1]), 2) + b"{}")
        elif path == "/declared-big":
            writer.write(_head(200, 10_000_000))
        elif path == "/endless":  # no length: read until close, which never comes
            writer.write(_head(200, None))
            while True:
                writer.write(b"x" * 65536)
                await writer.drain()
        elif path == "/drip":  # a byte every 50 ms: no single read waits long
            writer.write(_head(200, 1000))
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield Engine(port)
        server.close()


@pytest.fixture
async def client() -> AsyncIterator[EngineClient]:
    made = EngineClient(timeout_s=5, max_answer_bytes=1 << 20)
    yield made
    await made.aclose()


async def test_an_answer_comes_back_whole(engine: Engine, client: EngineClient) -> None:
    answer = await client.post(engine, "/json", {"a": [1, 2]})
    assert answer.status_code == 200
    assert answer.json() == {"echo": {"a": [1, 2]}}
    refused = await client.get(engine, "/status/404")
    assert (refused.status_code, refused.json_or_none()) == (404, {})


async def test_the_deadline_bounds_the_whole_call_not_each_read(
    engine: Engine, client: EngineClient
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(EngineFailed, match=r"engine e0 .*GET /drip: no whole answer within 0.5 s"):
        await client.get(engine, "/drip", timeout_s=0.5)
    assert loop.time() - began < 2


async def test_answers_over_the_cap_fail(engine: Engine, client: EngineClient) -> None:
    with pytest.raises(EngineFailed, match="answer of 10000000 bytes, over 1048576"):
        await client.get(engine, "/declared-big")
    with pytest.raises(EngineFailed, match="answer over 4096 bytes"):
        await client.get(engine, "/endless", max_bytes=4096)
    # The pool survives: the next call is answered.
    assert (await client.post(engine, "/json", 1)).json() == {"echo": 1}


async def test_an_unreachable_engine_fails_naming_it(client: EngineClient) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(EngineFailed, match=rf"engine gone \(port {port}\): GET /health: Connect"):
        await client.get(Engine(port, key="gone"), "/health")
