"""Validation through the real inference port in front of fake-engine processes."""

import json

from mlnode.infer.forcing.protocol import FORCED_IDS_XARG
from mlnode.infer.schemas import InferenceUpRequest

CHAT = "/v1/chat/completions"
TOP_BYTES = list(b"1")


def base(service) -> str:
    return f"http://127.0.0.1:{service.settings.port}"


async def started(make_service, **overrides):
    service = await make_service(**overrides)
    await service.up(InferenceUpRequest(model="tiny", dtype="auto", additional_args=[]))
    return service


async def test_json_answer_gets_decimal_ids_and_a_new_length(make_service, client) -> None:
    service = await started(make_service)
    body = {
        "model": "tiny",
        "logprobs": True,
        "top_logprobs": 2,
        "logprobs_mode": "processed_logprobs",
    }
    answer = await client.post(f"{base(service)}{CHAT}", json=body)
    assert answer.status_code == 200
    assert int(answer.headers.get("content-length", len(answer.content))) == len(answer.content)
    payload = answer.json()
    assert payload["received"]["return_tokens_as_token_ids"] is True
    assert "logprobs_mode" not in payload["received"]
    content = payload["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["7", "8", "9"]
    assert content[0]["bytes"] == list(b"w7")
    assert content[0]["top_logprobs"][1] == {"token": "1", "logprob": -2.0, "bytes": TOP_BYTES}


async def test_stream_chunks_rewritten_one_by_one(make_service, client) -> None:
    service = await started(make_service)
    body = {"model": "tiny", "logprobs": True, "stream": True}
    async with client.stream("POST", f"{base(service)}{CHAT}", json=body) as stream:
        events = [line async for line in stream.aiter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]" and len(events) == 6
    tokens = [
        json.loads(e[5:])["choices"][0]["logprobs"]["content"][0]["token"] for e in events[:-1]
    ]
    assert tokens == ["7", "8", "9", "7", "8"]


async def test_without_logprobs_nothing_is_added(make_service, client) -> None:
    service = await started(make_service)
    answer = await client.post(f"{base(service)}/v1/completions", json={"prompt": "x"})
    assert answer.json()["received"] == {"prompt": "x"}


async def test_rewriting_can_be_turned_off(make_service, client) -> None:
    service = await started(make_service, rewrite_token_ids=False)
    body = {"logprobs": True}
    answer = await client.post(f"{base(service)}{CHAT}", json=body)
    assert answer.json()["received"] == body and "logprobs" not in answer.json()["choices"][0]


async def test_forced_replay_reaches_the_plugin_as_ids(make_service, client) -> None:
    service = await started(make_service)
    tokens = [{"token": "41", "top_tokens": ["41"]}, {"token": "river"}, {"token": "12"}]
    body = {"logprobs": True, "enforced_tokens": {"tokens": tokens}, "vllm_xargs": {"k": "v"}}
    answer = await client.post(f"{base(service)}{CHAT}", json=body)
    assert answer.status_code == 200, answer.text
    received = answer.json()["received"]
    # The fake engine's /tokenize gives a word its length as id.
    assert received["vllm_xargs"] == {"k": "v", FORCED_IDS_XARG: [41, 5, 12]}
    assert "enforced_tokens" not in received
    content = answer.json()["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["41", "5", "12"]
    legacy = {"logprobs": True, "enforced_str": "the river flows"}
    received = (await client.post(f"{base(service)}{CHAT}", json=legacy)).json()["received"]
    assert received["vllm_xargs"] == {FORCED_IDS_XARG: [3, 5, 5]}


async def test_replay_without_the_plugin_is_503(make_service, client) -> None:
    service = await started(make_service, forcing=False)
    body = {"enforced_tokens": {"tokens": [{"token": "1"}]}, "max_tokens": 3}
    for _ in range(2):  # the probe's answer is kept
        answer = await client.post(f"{base(service)}{CHAT}", json=body)
        assert answer.status_code == 503
        assert "no forcing plugin" in answer.json()["error"]["message"]
    assert (await client.post(f"{base(service)}{CHAT}", json={"max_tokens": 3})).status_code == 200


async def test_other_mode_malformed_and_oversized_requests(make_service, client) -> None:
    service = await started(make_service, max_body_bytes=4096)
    url = f"{base(service)}{CHAT}"
    answer = await client.post(url, json={"logprobs_mode": "raw_logprobs"})
    assert answer.status_code == 503
    answer = await client.post(url, json={"enforced_str": ["x"]})
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "enforced_str"
    answer = await client.post(url, json={"prompt": "x" * 5000})
    assert answer.status_code == 413
    # The connection stays usable after answers given by the proxy itself.
    assert (await client.post(url, json={})).status_code == 200


async def test_chunked_request_body_is_rewritten_with_a_length(make_service, client) -> None:
    service = await started(make_service)

    async def parts():
        for piece in (b'{"logprobs": ', b"true, ", b'"x": "', b"y" * 50_000, b'"}'):
            yield piece

    answer = await client.post(f"{base(service)}{CHAT}", content=parts())
    assert answer.status_code == 200
    assert answer.json()["received"]["x"] == "y" * 50_000
    assert answer.json()["received"]["return_tokens_as_token_ids"] is True


async def test_big_body_is_planned_off_the_loop_with_the_same_result(make_service, client) -> None:
    service = await started(make_service)
    filler = "y" * (300 << 10)  # past PARSE_ON_LOOP_BYTES
    body = {"logprobs": True, "enforced_str": "the river flows", "x": filler}
    answer = await client.post(f"{base(service)}{CHAT}", json=body)
    assert answer.status_code == 200, answer.text
    received = answer.json()["received"]
    assert received["vllm_xargs"] == {FORCED_IDS_XARG: [3, 5, 5]} and received["x"] == filler
    too_long = await client.post(
        f"{base(service)}{CHAT}", json={**body, "enforced_str": filler * 4}
    )
    assert too_long.status_code == 413 and too_long.json()["error"]["param"] == "enforced_str"
