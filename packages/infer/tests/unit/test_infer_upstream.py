"""UpstreamPool against a raw asyncio server that closes kept-alive connections."""

import asyncio

import pytest

from mlnode.infer.engine import free_port
from mlnode.infer.upstream import UpstreamError, UpstreamPool

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def body_of(response) -> bytes:
    data = b"".join([chunk async for chunk in response.body()])
    await response.aclose()
    return data


async def test_closed_keepalive_connection_is_retried_on_a_fresh_one() -> None:
    connections = 0

    async def one_answer_then_close(reader, writer) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(one_answer_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(connect_timeout_s=2, read_timeout_s=5, max_idle=4)
    async with server:
        for _ in range(3):
            response = await pool.request("127.0.0.1", port, b"POST", b"/v1/x", [], b"{}")
            assert response.status_code == 200
            assert await body_of(response) == b"ok"
        await pool.aclose()
    assert connections == 3


async def test_connections_are_reused() -> None:
    connections = 0
    requests: list[bytes] = []

    async def keep_alive(reader, writer) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                requests.append(await read_request(reader))
                writer.write(ANSWER)
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(connect_timeout_s=2, read_timeout_s=5, max_idle=4)
    async with server:
        for _ in range(5):
            response = await pool.request(
                "127.0.0.1", port, b"POST", b"/v1/x?q=1", [(b"x-a", b"b")], b"{}"
            )
            assert await body_of(response) == b"ok"
        await pool.aclose()
    assert connections == 1
    assert requests[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
    assert b"x-a: b\r\n" in requests[0] and requests[0].endswith(b"\r\n\r\n{}")


async def test_refused_connection_is_an_upstream_error() -> None:
    pool = UpstreamPool(connect_timeout_s=2, read_timeout_s=5, max_idle=4)
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.request("127.0.0.1", free_port("127.0.0.1"), b"GET", b"/", [], b"")
