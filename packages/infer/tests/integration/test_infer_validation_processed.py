"""Forced replay in processed_logprobs mode (the post-sampling swap), and an engine without it.

One engine serves the processed-mode tests; the first test, before it starts, runs a node whose
engine has no forcing plugin.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlnode.infer.testing.gonka import compare, positions, replay_body
from mlnode.infer.testing.replay_node import (
    CHAT,
    HAVE_VLLM,
    NO_VLLM,
    assert_decimal_entries,
    chat,
    content_of,
    executor_request,
    serving_node,
)

pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason=NO_VLLM)

SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "logprobs_mode": "processed_logprobs"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Iterator[httpx.Client]:
    env = {"MLNODE_INFER_LOGPROBS_MODE": "processed_logprobs"}
    with serving_node(tmp_path_factory.mktemp("node"), tiny_llama, env) as (_, client):
        yield client


def test_engine_without_the_plugin_answers_503(tmp_path: Path, tiny_llama: Path) -> None:
    # Runs before the module's engine starts (it does not use `proxy`): one engine at a time.
    env = {"MLNODE_INFER_LOGPROBS_MODE": "raw_logprobs", "MLNODE_INFER_FORCING": "false"}
    stored = executor_request(tiny_llama, seed=17, max_tokens=8)
    with serving_node(tmp_path / "node", tiny_llama, env) as (_, bare):
        plain = bare.post(CHAT, json=stored)
        assert plain.status_code == 200
        assert_decimal_entries(content_of(plain.json()), plain.json()["choices"][0]["token_ids"])
        answer = bare.post(CHAT, json=replay_body(stored, content_of(plain.json()), seed=18))
        assert answer.status_code == 503, answer.text
        assert "no forcing plugin" in answer.json()["error"]["message"]
        legacy = {**stored, "enforced_str": "the cat"}
        assert bare.post(CHAT, json=legacy).status_code == 503


def test_processed_replay_keeps_the_models_logprobs(proxy: httpx.Client, tiny_llama: Path) -> None:
    stored = executor_request(tiny_llama, seed=17, max_tokens=24, **SAMPLING)
    original = chat(proxy, stored)
    content = content_of(original)
    assert_decimal_entries(content, original["choices"][0]["token_ids"])
    free = chat(proxy, {**stored, "seed": 18})
    assert free["choices"][0]["token_ids"] != original["choices"][0]["token_ids"]

    replay = chat(proxy, replay_body(stored, content, seed=18))
    verdict = compare(positions(content), positions(content_of(replay)))
    assert verdict.reason == "ok"
    assert verdict.similarity >= 0.99
    assert positions(content_of(replay)) == positions(content)
    # The validator's sampler-support check: the chosen token is inside the processed support.
    assert all(e["logprob"] > -9999.0 for e in content_of(replay))


def test_processed_replay_with_greedy_executor(proxy: httpx.Client, tiny_llama: Path) -> None:
    stored = executor_request(tiny_llama, seed=1, max_tokens=12, temperature=0.0)
    original = chat(proxy, stored)
    replay = chat(proxy, replay_body({**stored, "temperature": 0.0}, content_of(original), seed=2))
    assert positions(content_of(replay)) == positions(content_of(original))


def test_raw_mode_request_is_refused(proxy: httpx.Client, tiny_llama: Path) -> None:
    stored = executor_request(tiny_llama, seed=1, logprobs_mode="raw_logprobs")
    assert proxy.post(CHAT, json=stored).status_code == 503
