"""The inference port's limits on a real port: head size and count, head, body and idle time."""

import asyncio

import pytest

from mlnode.common.http.limits import HeaderTooLarge, HttpLimits
from mlnode.infer.limits import ConnectionClock, HeadBudget, Stall
from mlnode.infer.schemas import InferenceUpRequest

FAST = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keepalive_timeout_s": 0.5}


async def exchange(port: int, data: bytes, read_timeout_s: float = 10.0) -> bytes:
    """Send `data`, then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout_s)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_head_larger_than_the_limit_is_431_and_closed(make_service) -> None:
    service = await make_service(max_header_bytes=4096)
    head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n"
    answer = await exchange(service.settings.port, head)
    assert status_of(answer) == 431
    assert b"MLNODE_INFER_MAX_HEADER_BYTES" in answer
    assert not service.relay.connections


async def test_endless_header_is_refused_after_the_limit(make_service) -> None:
    service = await make_service(max_header_bytes=4096)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.settings.port)
    writer.write(b"GET /health HTTP/1.1\r\nx-big: ")
    with pytest.raises(ConnectionError):
        for _ in range(2000):
            writer.write(b"a" * 65536)
            await writer.drain()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert not service.relay.connections


async def test_head_just_within_the_limit_is_served(make_service) -> None:
    service = await make_service(max_header_bytes=4096)
    head = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx: "
    head += b"a" * (4096 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 4096
    assert status_of(await exchange(service.settings.port, head)) == 503


async def test_too_many_header_lines_is_431(make_service) -> None:
    service = await make_service(max_headers=10)
    lines = b"".join(b"x-%d: v\r\n" % i for i in range(11))
    answer = await exchange(service.settings.port, b"GET /health HTTP/1.1\r\n" + lines + b"\r\n")
    assert status_of(answer) == 431 and b"MLNODE_INFER_MAX_HEADERS" in answer


async def test_half_sent_head_gets_408_even_when_dripped(make_service) -> None:
    service = await make_service(**FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.settings.port)
    writer.write(b"GET /health HTTP/1.1\r\n")
    answer = asyncio.create_task(reader.read(65536))
    for _ in range(100):
        await asyncio.sleep(0.1)
        if answer.done():
            break
        writer.write(b"x")
    assert answer.done(), "a dripped head must not keep the connection open"
    writer.close()
    assert status_of(answer.result()) == 408 and b"request head not complete" in answer.result()


async def test_stalled_body_gets_408(make_service) -> None:
    service = await make_service(**FAST)
    await service.up(InferenceUpRequest(model="tiny", dtype="auto", additional_args=[]))
    head = b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
    answer = await exchange(service.settings.port, head)
    assert status_of(answer) == 408 and b"request body paused" in answer


async def test_idle_kept_alive_connection_is_closed(make_service) -> None:
    service = await make_service(**FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.settings.port)
    writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert status_of(rest) == 503 and rest.count(b"HTTP/1.1") == 1
    assert not service.relay.connections


async def test_connection_that_never_speaks_is_closed(make_service) -> None:
    service = await make_service(**FAST)
    assert await exchange(service.settings.port, b"") == b""


async def test_normalised_paths_on_the_port(make_service, client) -> None:
    service = await make_service()
    await service.up(InferenceUpRequest(model="tiny", dtype="auto", additional_args=[]))
    port = service.settings.port
    outside = await exchange(port, b"GET /v1/../metrics HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert status_of(outside) == 404 and b"/metrics is not served" in outside
    encoded = await exchange(port, b"GET /v1%2f..%2fx HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert status_of(encoded) == 400
    response = await client.post(
        f"http://127.0.0.1:{port}/v1/echo",
        headers={"connection": "keep-alive, x-hop", "x-hop": "secret", "x-end": "kept"},
        content=b"{}",
    )
    echo = response.json()
    assert "x-hop" not in echo["headers"] and echo["headers"]["x-end"] == "kept"
    raw = b"POST //v1/./x/../echo HTTP/1.1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    answer = await exchange(port, raw)
    assert status_of(answer) == 200 and b'"path": "/v1/echo"' in answer


def test_head_budget_counts_lines_and_bytes() -> None:
    budget = HeadBudget(HttpLimits(max_head_bytes=10, max_headers=2))
    budget.spend(7)
    assert budget.room() == 3
    budget.line()
    budget.line()
    with pytest.raises(HeaderTooLarge):
        budget.line()
    budget.reset()
    assert budget.room() == 10 and budget.heads == 1
    budget.line()


async def test_clock_deadlines_follow_the_connection() -> None:
    fired: list[Stall] = []
    limits = HttpLimits(header_timeout_s=1.0, body_timeout_s=2.0, keepalive_timeout_s=3.0)
    clock = ConnectionClock(limits, fired.append)
    loop = asyncio.get_running_loop()
    due = clock.deadline()
    assert (
        due is not None
        and due[1] is Stall.IDLE
        and due[0] == pytest.approx(loop.time() + 1, abs=0.1)
    )
    clock.data()
    assert clock.deadline()[1] is Stall.HEAD  # type: ignore[index]
    clock.head_done()
    clock.set_busy(True)
    assert clock.deadline()[1] is Stall.BODY  # type: ignore[index]
    clock.message_done()
    assert clock.deadline() is None
    clock.set_busy(False)
    due = clock.deadline()
    assert (
        due is not None
        and due[1] is Stall.IDLE
        and due[0] == pytest.approx(loop.time() + 3, abs=0.1)
    )
    clock.set_paused(True)
    assert clock.deadline() is None
    clock.stop()
    assert fired == []


async def test_body_is_not_buffered_while_the_engine_connection_hangs(make_service) -> None:
    import socket

    from mlnode.infer.balancer import Backend

    service = await make_service(connect_timeout_s=3.0, max_body_bytes=1 << 30)
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: the next connect hangs until the timeout
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    await asyncio.sleep(0.2)
    service.balancer.set_backends([Backend("hung", "127.0.0.1", port)])
    size = 256 << 20
    _, writer = await asyncio.open_connection("127.0.0.1", service.settings.port)
    writer.write(b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size)
    sent = 0

    async def push() -> None:
        nonlocal sent
        piece = b"x" * (1 << 20)
        while sent < size:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)

    pusher = asyncio.create_task(push())
    await asyncio.sleep(1.5)  # the engine connection is still hanging (3 s timeout)
    taken_while_connecting = sent
    pusher.cancel()
    writer.close()
    for sock in (full, *fillers):
        sock.close()
    # Loopback moves hundreds of MiB in that time; a paused client gets only socket buffers in.
    assert taken_while_connecting < 64 << 20, f"{taken_while_connecting >> 20} MiB taken"
