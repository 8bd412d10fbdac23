"""Relayed bodies over `MLNODE_INFER_MAX_BODY_BYTES`, and headers named in `Connection`."""

from __future__ import annotations

import asyncio
import json

from mlnode.infer.schemas import InferenceUpRequest

LIMIT = 4096
CHAT = "/v1/chat/completions"


async def started(make_service, **overrides):
    service = await make_service(max_body_bytes=LIMIT, **overrides)
    await service.up(InferenceUpRequest(model="tiny", dtype="auto", additional_args=[]))
    return service


async def exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send `head` (and `body`), then read until the node closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def status_and_error(answer: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


async def test_declared_length_over_the_bound_is_refused_before_the_body(make_service) -> None:
    service = await started(make_service)
    port = service.settings.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /tokenize HTTP/1.1\r\nhost: x\r\ncontent-length: 67108864\r\n\r\n")
    await writer.drain()
    # The answer comes before a byte of the body is sent.
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head
    writer.close()
    answer = await exchange(
        port,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"content-length: 5000\r\n\r\n",
    )
    status, error = status_and_error(answer)
    assert status == 413 and b"100 Continue" not in answer
    assert "MLNODE_INFER_MAX_BODY_BYTES" in error["message"] and error["param"] == "body"


async def test_chunked_body_is_cut_at_the_bound(make_service, client) -> None:
    service = await started(make_service)
    piece = b"a" * 1000
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for _ in range(6)) + b"0\r\n\r\n"
    for path in (b"/tokenize", CHAT.encode()):
        head = b"POST %b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" % path
        status, error = status_and_error(await exchange(service.settings.port, head, chunks))
        assert status == 413 and "MLNODE_INFER_MAX_BODY_BYTES" in error["message"], path
    # Nothing of the refused bodies is left in flight; an honest body still goes through.
    assert service.balancer.total_in_flight() == 0
    honest = await client.post(f"http://127.0.0.1:{service.settings.port}/tokenize", json={})
    assert honest.status_code == 200


async def test_oversized_replay_fields_name_their_setting(make_service, client) -> None:
    service = await started(
        make_service, max_enforced_str_chars=1024, max_enforced_tokens=16, max_prompt_chars=1024
    )
    url = f"http://127.0.0.1:{service.settings.port}{CHAT}"
    cases = {
        "enforced_str": ({"enforced_str": "w " * 600}, "MLNODE_INFER_MAX_ENFORCED_STR_CHARS"),
        "enforced_tokens": (
            {"enforced_tokens": {"tokens": [{"token": "1"}] * 17}},
            "MLNODE_INFER_MAX_ENFORCED_TOKENS",
        ),
        "prompt": ({"prompt": "p" * 1100}, "MLNODE_INFER_MAX_PROMPT_CHARS"),
        "messages": (
            {"messages": [{"role": "user", "content": "m" * 600}] * 2},
            "MLNODE_INFER_MAX_PROMPT_CHARS",
        ),
    }
    for field, (body, setting) in cases.items():
        answer = await client.post(url, json=body)
        assert answer.status_code == 413, field
        assert answer.json()["error"]["param"] == field and setting in answer.text
    fine = {"messages": [{"role": "user", "content": "m" * 500}], "enforced_str": "w w"}
    assert (await client.post(url, json=fine)).status_code == 200


async def test_connection_named_headers_stop_at_the_proxy(make_service, client) -> None:
    service = await started(make_service)
    named = {"connection": "x-private, authorization", "x-private": "p", "x-kept": "k"}
    answer = await client.post(
        f"http://127.0.0.1:{service.settings.port}{CHAT}", json={"logprobs": True}, headers=named
    )
    received = answer.json()["received_headers"]
    assert "x-kept" in received and "x-private" not in received
    assert answer.json()["received"]["return_tokens_as_token_ids"] is True

    sent: list[dict[str, object]] = []
    body = [b'{"a": 1}']

    async def receive() -> dict[str, object]:
        if body:
            return {"type": "http.request", "body": body.pop(), "more_body": False}
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    headers = [(k.encode(), v.encode()) for k, v in named.items()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/echo",
        "raw_path": b"/v1/echo",
        "query_string": b"",
        "headers": headers,
    }
    await service.engine_asgi(scope, receive, send)
    echo = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))  # type: ignore[misc]
    assert "x-kept" in echo["headers"] and "x-private" not in echo["headers"]
