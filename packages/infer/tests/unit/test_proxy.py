"""The proxy on a real inference port in front of fake-engine processes."""

import asyncio
import json
from typing import Any

import httpx
import pytest

from mlnode.common.testing import wait_until_async
from mlnode.infer.balancer import Backend
from mlnode.infer.engine import free_port
from mlnode.infer.schemas import InferenceUpRequest


def up_request(*args: str) -> InferenceUpRequest:
    return InferenceUpRequest(model="tiny", dtype="auto", additional_args=list(args))


def base(service) -> str:
    return f"http://127.0.0.1:{service.settings.port}"


async def engine_stats(client: httpx.AsyncClient, port: int) -> dict[str, Any]:
    stats: dict[str, Any] = (await client.get(f"http://127.0.0.1:{port}/control/stats")).json()
    return stats


async def test_forwards_method_path_query_headers_and_body(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request())
    response = await client.post(
        f"{base(service)}/v1/echo?a=1&b=two%20words",
        content=b'{"x": 1}',
        headers={"x-request-id": "r-7", "content-type": "application/json"},
    )
    echo = response.json()
    assert echo["method"] == "POST" and echo["path"] == "/v1/echo"
    assert echo["query"] == "a=1&b=two%20words"
    assert echo["headers"]["x-request-id"] == "r-7"
    assert echo["headers"]["host"] == f"127.0.0.1:{echo['port']}"
    assert echo["body"] == '{"x": 1}'


async def test_streamed_request_body_reaches_the_engine(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request())

    async def parts():
        for piece in (b'{"a": ', b'"', b"x" * 100_000, b'"}'):
            yield piece

    response = await client.post(f"{base(service)}/v1/echo", content=parts())
    assert json.loads(response.json()["body"]) == {"a": "x" * 100_000}


async def test_stream_is_relayed_before_the_engine_finishes(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request("--chunks", "4", "--chunk-delay", "0.5"))
    port = service.inference_status().instances[0].port
    request = {"stream": True}
    async with client.stream("POST", f"{base(service)}/v1/completions", json=request) as stream:
        chunks = stream.aiter_raw()
        first = await anext(chunks)
        assert first.startswith(b"data: ") and b"t0" in first
        assert (await engine_stats(client, port))["in_flight"] == 1
        rest = b"".join([chunk async for chunk in chunks])
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_no_engine_answers_503(make_service, client) -> None:
    service = await make_service()
    response = await client.post(f"{base(service)}/v1/completions", json={})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert (await client.get(f"{base(service)}/health")).status_code == 503
    assert (await client.get(f"{base(service)}/other")).status_code == 404


async def test_unreachable_engine_answers_502(make_service, client) -> None:
    service = await make_service()
    service.balancer.set_backends([Backend("gone", "127.0.0.1", free_port("127.0.0.1"))])
    response = await client.post(f"{base(service)}/v1/completions", json={})
    assert response.status_code == 502
    assert "engine gone failed" in response.json()["error"]["message"]
    assert service.balancer.total_in_flight() == 0


async def test_engine_crash_mid_stream_ends_with_an_error_event(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request("--chunks", "5", "--crash-after-chunks", "2"))
    async with client.stream("POST", f"{base(service)}/v1/completions", json={"stream": True}) as s:
        events = [line async for line in s.aiter_lines() if line.startswith("data:")]
    assert len(events) == 3
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "engine_failed" and "mid-response" in error["message"]
    await wait_until_async(
        lambda: service.inference_status().instances[0].state == "dead", timeout_s=15
    )
    assert (await client.post(f"{base(service)}/v1/completions", json={})).status_code == 503


async def test_engine_crash_mid_body_cuts_the_client_connection(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request())
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(f"{base(service)}/v1/completions", json={"die_mid_body": True})
    await wait_until_async(
        lambda: service.inference_status().instances[0].state == "dead", timeout_s=15
    )


async def test_client_disconnect_cancels_the_upstream_request(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request("--chunks", "1000", "--chunk-delay", "0.05"))
    port = service.inference_status().instances[0].port
    async with client.stream("POST", f"{base(service)}/v1/completions", json={"stream": True}) as s:
        await anext(s.aiter_raw())
    await wait_until_async(lambda: service.balancer.total_in_flight() == 0, timeout_s=5)
    await wait_until_async(
        lambda: engine_stats(client, port), lambda s: s["cancelled"] == 1, timeout_s=5
    )
    assert (await engine_stats(client, port))["in_flight"] == 0


async def test_two_instances_balanced_by_requests_in_flight(make_service, client) -> None:
    service = await make_service(gpus=[0, 1])
    await service.up(up_request())
    held = asyncio.create_task(client.post(f"{base(service)}/v1/completions", json={"hold_s": 2.0}))
    await wait_until_async(lambda: service.balancer.total_in_flight() == 1, timeout_s=5)
    busy = [i for i in service.inference_status().instances if i.requests_in_flight == 1]
    assert len(busy) == 1
    quick_ports = set()
    for _ in range(4):
        response = await client.post(f"{base(service)}/v1/completions", json={})
        quick_ports.add(response.json()["port"])
    other = {i.port for i in service.inference_status().instances} - {busy[0].port}
    assert quick_ports == other
    assert (await held).json()["port"] == busy[0].port
    assert service.inference_status().requests_in_flight == 0


async def test_client_gone_while_sending_its_body_is_cleaned_up(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request())

    async def broken_body():
        yield b'{"prompt": '
        await asyncio.sleep(0.2)
        raise RuntimeError("client gives up")

    with pytest.raises(RuntimeError):
        await client.post(f"{base(service)}/v1/echo", content=broken_body())
    await wait_until_async(lambda: service.balancer.total_in_flight() == 0, timeout_s=5)
    response = await client.post(f"{base(service)}/v1/echo", content=b"{}")
    assert response.status_code == 200 and response.json()["body"] == "{}"
