"""The inference port's HTTP handling against raw asyncio engines that misbehave on purpose."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mlnode.infer.balancer import Backend, LeastConnections
from mlnode.infer.engine import free_port
from mlnode.infer.proxy import Relay
from mlnode.infer.server import InferenceServer
from mlnode.infer.upstream import UpstreamError, UpstreamPool

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
    if b"content-length" in fields:
        return head, await reader.readexactly(int(fields[b"content-length"]))
    body = b""
    if fields.get(b"transfer-encoding") == b"chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
        return head, body
    return head, await reader.read()


class Engine:
    """A raw engine on a free port, counting the connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def proxy_to() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[int, Engine]]]]:
    """Start an engine with `handler` and an inference port in front of it; returns the port."""
    servers: list[InferenceServer] = []
    engines: list[Engine] = []

    async def start(handler: Handler) -> tuple[int, Engine]:
        engine = Engine(handler)
        engine_port = await engine.start()
        balancer = LeastConnections()
        balancer.set_backends([Backend("0", "127.0.0.1", engine_port)])
        relay = Relay(balancer, UpstreamPool(2, 5, 4), lambda: True)
        port = free_port("127.0.0.1")
        server = InferenceServer(relay, "127.0.0.1", port)
        await server.start()
        servers.append(server)
        engines.append(engine)
        return port, engine

    yield start
    for server in servers:
        await server.stop()
        server.relay.close()
    for engine in engines:
        assert engine.server is not None
        engine.server.close()


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        request = await read_request(reader)
        body = request.split(b"\r\n\r\n", 1)[1] or b"ok"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()


async def post(port: int, body: bytes, extra: bytes = b"") -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/x?q=1 HTTP/1.1\r\nhost: a\r\nx-a: b\r\n%bcontent-length: %d\r\n\r\n%b"
        % (extra, len(body), body)
    )
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def test_closed_keepalive_connection_is_retried_on_a_fresh_one(proxy_to) -> None:
    async def one_answer_then_close(reader, writer) -> None:
        await read_request(reader)
        writer.write(ANSWER)  # keep-alive by HTTP/1.1 rules, yet the engine hangs up
        await writer.drain()

    port, engine = await proxy_to(one_answer_then_close)
    for _ in range(3):
        head, body = await post(port, b"{}")
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        await asyncio.sleep(0.05)
    assert engine.connections == 3


async def test_connections_to_the_engine_are_reused(proxy_to) -> None:
    seen: list[bytes] = []

    async def recording(reader, writer) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(ANSWER)
            await writer.drain()

    port, engine = await proxy_to(recording)
    for _ in range(5):
        assert (await post(port, b"{}"))[1] == b"ok"
    assert engine.connections == 1
    assert seen[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
    assert b"x-a: b\r\n" in seen[0] and seen[0].endswith(b"\r\n\r\n{}")


async def test_refused_connection_is_an_upstream_error() -> None:
    pool = UpstreamPool(connect_timeout_s=2, read_timeout_s=5, max_idle=4)
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.connect("127.0.0.1", free_port("127.0.0.1"))


async def test_pipelined_requests_are_answered_in_order(proxy_to) -> None:
    port, _ = await proxy_to(keep_alive)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    bodies = [b"first", b"second" * 1000, b"third"]
    writer.write(
        b"".join(
            b"POST /v1/e HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n%b" % (len(b), b)
            for b in bodies
        )
    )
    answers = [(await read_response(reader))[1] for _ in bodies]
    writer.close()
    assert answers == bodies


async def test_malformed_request_is_answered_400(proxy_to) -> None:
    port, _ = await proxy_to(keep_alive)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    head, body = await read_response(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400") and b"malformed HTTP request" in body


async def test_expect_continue_is_answered_by_the_proxy(proxy_to) -> None:
    port, _ = await proxy_to(keep_alive)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/e HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n"
    )
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    head, body = await read_response(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200") and body == b"body"


async def test_answer_delimited_by_close_reaches_the_client_chunked(proxy_to) -> None:
    async def close_delimited(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    port, _ = await proxy_to(close_delimited)
    head, body = await post(port, b"{}")
    assert b"transfer-encoding: chunked" in head.lower() and body == b"until the end"


async def test_head_request_does_not_wait_for_a_body(proxy_to) -> None:
    async def head_answer(reader, writer) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            await writer.drain()

    port, _ = await proxy_to(head_answer)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"HEAD /v1/models HTTP/1.1\r\nhost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 10" in head
    writer.close()


async def test_engine_answer_before_the_body_ends_is_relayed(proxy_to) -> None:
    async def early_refusal(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        refusal = b'{"error": "too large"}'
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: %d\r\n\r\n%b"
            % (len(refusal), refusal)
        )
        await writer.drain()
        await asyncio.sleep(1)

    port, _ = await proxy_to(early_refusal)
    head, body = await post(port, b"x" * 2_000_000)
    assert head.startswith(b"HTTP/1.1 413") and body == b'{"error": "too large"}'


async def test_large_answer_to_a_slow_client_arrives_whole(proxy_to) -> None:
    blob = bytes(range(256)) * (32 * 1024)  # 8 MiB

    async def large(reader, writer) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(blob))
            for i in range(0, len(blob), 1 << 20):
                writer.write(blob[i : i + (1 << 20)])
                await writer.drain()

    port, engine = await proxy_to(large)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    for _ in range(2):
        writer.write(b"GET /v1/blob HTTP/1.1\r\nhost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        received = bytearray()
        while len(received) < len(blob):
            received += await reader.read(1 << 16)
            await asyncio.sleep(0.001)
        assert head.startswith(b"HTTP/1.1 200") and bytes(received) == blob
    writer.close()
    assert engine.connections == 1
