"""A real MLNode's inference port under slow and oversized clients while honest calls flow.

Hundreds of half-sent heads and idle connections, a 128 MiB header, ambiguous paths and 30 MiB
chat bodies: each is refused (431, 408, 400/404, 413) or closed within its limit, honest
inference and REST calls keep succeeding throughout, and the node's memory stays within
`RSS_BOUND` of its idle value. One-port mode (the engine routes on the REST port) keeps the
inference port's limits too.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlnode.common.testing import MLNodeProcess
from mlnode.common.testing.pressure import AttackWatch, raw_exchange, tree_rss
from mlnode.infer.testing.support import FAKE_ENGINE

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
#: Below the REST port's own 100, so a 431 on an engine path is the inference port's limit.
INFER_MAX_HEADERS = 50
SLOW_CLIENTS = 300
IDLE_CLIENTS = 300
RSS_BOUND = 128 << 20
NODE_ENV = {
    "MLNODE_INFER_ENGINE_MODULE": FAKE_ENGINE,
    "MLNODE_INFER_GPUS": "[]",
    "MLNODE_INFER_MAX_RESTARTS": "0",
    "MLNODE_INFER_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "MLNODE_INFER_KEEPALIVE_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "MLNODE_INFER_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "MLNODE_INFER_MAX_HEADERS": str(INFER_MAX_HEADERS),
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLNodeProcess]:
    with MLNodeProcess(tmp_path_factory.mktemp("infer-port") / "node", NODE_ENV) as started:
        up = {"model": "tiny", "dtype": "auto", "additional_args": []}
        answer = httpx.post(f"{started.url}/api/v1/inference/up", json=up, timeout=60)
        assert answer.status_code == 200, answer.text
        yield started


async def honest_calls(node: MLNodeProcess, stop: asyncio.Event) -> tuple[int, list[str]]:
    """Chat completions on the inference port and /state on REST until `stop`."""
    ok, failures = 0, []
    port = node.inference_port
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            try:
                chat = await client.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions", json={"messages": []}
                )
                state = await client.get(f"{node.url}/api/v1/state")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if chat.status_code == 200 and state.status_code == 200:
                ok += 1
            else:
                failures.append(f"{chat.status_code} {state.status_code}")
            await asyncio.sleep(0.01)
    return ok, failures


async def open_slow(
    port: int, first_bytes: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except (ConnectionError, TimeoutError):
        return b"<reset or timeout>"


async def huge_header(port: int) -> str:
    """Stream a 128 MiB header; the node must cut it off after its head limit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-huge: ")
    sent = 0
    try:
        while sent < 128 << 20:
            writer.write(b"a" * (1 << 20))
            await writer.drain()
            sent += 1 << 20
    except ConnectionError:
        return f"cut after {sent >> 20} MiB"
    finally:
        writer.close()
    return "not cut" if await read_until_closed(reader, 10) else ""


async def attack(node: MLNodeProcess) -> dict[str, object]:
    port = node.inference_port
    stop = asyncio.Event()
    honest = asyncio.create_task(honest_calls(node, stop))
    slow = [
        await open_slow(port, b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n")
        for _ in range(SLOW_CLIENTS)
    ]
    idle = [await open_slow(port, b"") for _ in range(IDLE_CLIENTS)]
    cut = await huge_header(port)
    assert node.proc is not None
    peak = tree_rss(node.proc.pid)
    slow_answers = await asyncio.gather(
        *(read_until_closed(r, HEADER_TIMEOUT_S * 10) for r, _ in slow)
    )
    idle_answers = await asyncio.gather(
        *(read_until_closed(r, HEADER_TIMEOUT_S * 10) for r, _ in idle)
    )
    for _, writer in slow + idle:
        writer.close()
    stop.set()
    ok, failures = await honest
    return {
        "slow": slow_answers,
        "idle": idle_answers,
        "cut": cut,
        "peak": peak,
        "ok": ok,
        "failures": failures,
    }


def test_slow_idle_and_huge_clients_are_bounded(node: MLNodeProcess) -> None:
    assert node.proc is not None
    before = tree_rss(node.proc.pid)
    seen: dict[str, Any] = asyncio.run(attack(node))
    assert not seen["failures"], seen["failures"][:5]
    assert seen["ok"] > 0
    assert str(seen["cut"]).startswith("cut after"), seen["cut"]
    slow = seen["slow"]
    assert all(a.startswith(b"HTTP/1.1 408") for a in slow), {a[:40] for a in slow}
    assert all(a == b"" for a in seen["idle"])
    assert int(seen["peak"]) - before < RSS_BOUND
    after = httpx.get(f"http://127.0.0.1:{node.inference_port}/health", timeout=10)
    assert after.status_code == 200


def test_paths_are_judged_after_normalisation(node: MLNodeProcess) -> None:
    base = f"http://127.0.0.1:{node.inference_port}"

    async def raw(target: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.inference_port)
        writer.write(b"GET %b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % target)
        answer = await read_until_closed(reader, 10)
        writer.close()
        return answer

    outside = asyncio.run(raw(b"/v1/../api/v1/state"))
    assert outside.startswith(b"HTTP/1.1 404") and b"/api/v1/state is not served" in outside
    assert asyncio.run(raw(b"/v1/%2e%2e/metrics")).startswith(b"HTTP/1.1 404")
    assert asyncio.run(raw(b"/v1%2f..%2fhealth")).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{base}//v1/models", timeout=10).status_code == 200
    private = {"connection": "x-private", "x-private": "p"}
    echo = httpx.post(f"{base}/v1/echo", headers=private, content=b"{}").json()
    assert "x-private" not in echo["headers"]
    # The same through the REST port's one-port relay, and on a path rewritten for validation.
    echo = httpx.post(f"{node.url}/v1/echo", headers=private, content=b"{}").json()
    assert "x-private" not in echo["headers"]
    chat = httpx.post(f"{base}/v1/chat/completions", headers=private, json={"logprobs": True})
    assert "x-private" not in chat.json()["received_headers"]


#: The node and its fake engine while chat bodies near the bound are parsed and relayed.
BODY_RSS_BOUND = 256 << 20


def test_big_chat_bodies_leave_the_port_responsive(node: MLNodeProcess) -> None:
    """8 x 30 MiB chat bodies once stalled /livez 1.5 s; now they are refused at their head."""
    assert node.proc is not None
    port = node.inference_port
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n"
    near = {"messages": [{"role": "user", "content": "w" * (1900 << 10)}], "logprobs": True}
    answers: list[bytes] = []
    honest: list[int] = []

    def huge() -> None:
        answers.append(raw_exchange(port, head % (30 << 20), b"x" * (1 << 20), 30 << 20)[0])

    def big_but_allowed() -> None:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        honest.append(httpx.post(url, content=json.dumps(near).encode(), timeout=60).status_code)

    before = tree_rss(node.proc.pid)
    with AttackWatch(f"http://127.0.0.1:{port}", [node.proc.pid], interval_s=0.02) as watch:
        threads = [threading.Thread(target=f) for f in (huge, big_but_allowed) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert len(answers) == 8 and all(a.startswith(b"HTTP/1.1 413") for a in answers), answers
    assert honest == [200] * 8, honest
    assert not watch.failures, watch.failures[:5]
    assert watch.livez_p99_s() < 0.25, watch.livez_p99_s()
    assert watch.peak_rss_bytes() - before < BODY_RSS_BOUND


def test_one_port_keeps_the_inference_port_limits(node: MLNodeProcess) -> None:
    """413 before the body, 431 past the inference port's header count, 408 for a paused body."""
    # 8 MiB: past the inference port's 4 MiB bound, within the REST port's own 16 MiB.
    declared, sent = raw_exchange(
        node.port,
        b"POST /tokenize HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (8 << 20),
        b"x" * (64 << 10),
        8 << 20,
    )
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    assert b"MLNODE_INFER_MAX_BODY_BYTES" in declared
    assert sent < 4 << 20, "the answer came before the body"

    lines = b"".join(b"x-h%d: v\r\n" % i for i in range(INFER_MAX_HEADERS + 10))
    many, _ = raw_exchange(node.port, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n%b\r\n" % lines)
    assert many.startswith(b"HTTP/1.1 431") and b"MLNODE_INFER_MAX_HEADERS" in many, many[:300]
    rest, _ = raw_exchange(node.port, b"GET /api/v1/state HTTP/1.1\r\nhost: x\r\n%b\r\n" % lines)
    assert rest.startswith(b"HTTP/1.1 200"), rest[:300]

    started = time.monotonic()
    slow, _ = raw_exchange(
        node.port,
        b'POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"a": ',
        timeout_s=BODY_TIMEOUT_S * 5,
    )
    waited = time.monotonic() - started
    assert slow.startswith(b"HTTP/1.1 408") and b"request_timeout" in slow, slow[:300]
    assert BODY_TIMEOUT_S * 0.9 <= waited < BODY_TIMEOUT_S * 4, waited
    assert httpx.get(f"{node.url}/v1/models", timeout=10).status_code == 200
