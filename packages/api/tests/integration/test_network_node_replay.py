"""Replay of the network node's calls (network-node-contract §2a, §2b) against a real MLNode.

Every request is written as gonka's Go client writes it (`GoClient`: `json.Marshal` bytes, no
Content-Type, Go's headers), with and without the `/v3.0.8` prefix and, on the second node, with
`Authorization: Bearer`. The engines are the fake engine with pow's real PoC v2 endpoint plugin
over a deterministic worker stand-in, two instances, so the fan-out, the engine routes and runner
and their callbacks run for real over loopback. Each answer is checked for what
the client reads: the status it needs and the fields it decodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mlnode.common.testing import CallbackReceiver, MLNodeProcess, wait_until
from mlnode.common.testing.go_client import GoAnswer, GoClient
from mlnode.infer.testing.support import FAKE_ENGINE
from mlnode.pow.engine.testing import artifact

MODEL = "Qwen/Qwen3-0.6B"
#: url.PathEscape(url.PathEscape(model)), as the network node builds its callback URL.
MODEL_SEGMENT = "Qwen%252FQwen3-0.6B"
TOKEN = "replay-token"
NODE_ENV = {
    "MLNODE_INFER_ENGINE_MODULE": FAKE_ENGINE,
    "MLNODE_INFER_GPUS": "[0, 1]",
    "MLNODE_INFER_HEALTH_INTERVAL_S": "0.2",
    "MLNODE_INFER_MAX_RESTARTS": "0",
    "MLNODE_INFER_UP_WAIT_S": "2",
    "HF_HUB_OFFLINE": "1",
    # The engine plugin's own settings: callbacks every 0.2 s, validation alongside inference.
    "MLNODE_INFER_ENGINE_ENV": json.dumps(
        {"MLNODE_POC_CALLBACK_INTERVAL_S": "0.2", "MLNODE_POC_VALIDATION_INFERENCE": "true"}
    ),
}
#: How the newest client reads a failed `inference/up`: retry these, give up on the rest.
RETRYABLE = frozenset({408, 409, 429})
PERMANENT = frozenset({400, 404, 422})


def retryable(status: int) -> bool:
    """The newest client's classification of a non-2xx answer."""
    return status in RETRYABLE or status >= 500


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLNodeProcess]:
    root = tmp_path_factory.mktemp("replay")
    env = {**NODE_ENV, "HF_HUB_CACHE": str(root / "hub")}
    if request.param is not None:
        env["MLNODE_API_TOKEN"] = request.param
    with MLNodeProcess(root / "node", env) as started:
        started.token = request.param  # type: ignore[attr-defined]
        yield started


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as started:
        yield started


def clients(node: MLNodeProcess, prefix: str) -> tuple[GoClient, GoClient]:
    token = getattr(node, "token", None)
    return (
        GoClient(node.port, prefix=prefix, token=token),
        GoClient(node.inference_port, prefix=prefix, token=token),
    )


#: The block fields that open the network node's PoC v2 structs, in their Go order.
PROVER: tuple[tuple[str, Any], ...] = (
    ("block_hash", "0xblock"),
    ("block_height", 1234),
    ("public_key", "prover-pk"),
    ("node_id", 0),
    ("node_count", 1),
)


def marshal(*pairs: tuple[str, Any]) -> bytes:
    """Go's json.Marshal of a struct: fields in declaration order, no spaces."""
    return json.dumps(dict(pairs), separators=(",", ":")).encode()


def ok_json(answer: GoAnswer, below: int = 400) -> dict[str, Any]:
    """What the newest client needs: status < 400 and a JSON body."""
    assert answer.status < below, (answer.status, answer.body)
    body = answer.json()
    assert isinstance(body, dict)
    return body


def up_like_newest_client(rest: GoClient, body: bytes, budget_s: float = 60) -> GoAnswer:
    """`InferenceUp` as the newest client sends it: retry a retryable answer, stop otherwise."""
    deadline = time.monotonic() + budget_s
    while True:
        answer = rest.post("/api/v1/inference/up", body)
        if 200 <= answer.status < 300 or not retryable(answer.status):
            return answer
        assert time.monotonic() < deadline, (answer.status, answer.body)
        time.sleep(0.2)


def wait_state(rest: GoClient, state: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = ok_json(rest.get("/api/v1/state"))
        if body["state"] == state or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@pytest.mark.parametrize("prefix", ["", "/v3.0.8"], ids=["plain", "versioned"])
def test_newest_client(node: MLNodeProcess, receiver: CallbackReceiver, prefix: str) -> None:
    rest, inf = clients(node, prefix)
    callback = f"{receiver.url}/v2/poc-batches/{MODEL_SEGMENT}"

    # N1 before anything runs; N4 answers 503 without engines.
    state = ok_json(rest.get("/api/v1/state"))
    assert state["state"] == "STOPPED" and isinstance(state["version"], str)
    assert state["poc_validation_inference"] is False and state["loaded_model"] is None
    assert inf.get("/health").status == 503

    # The ping job's clock, without a token even where one is set.
    clock = GoClient(node.port, prefix=prefix).get("/api/v1/clock")
    assert clock.status == 204 and clock.body == b""
    assert int(clock.headers["x-server-recv-ns"]) <= int(clock.headers["x-server-send-ns"])

    # N3 InferenceUp: 2xx, retried as the newest client retries.
    up_body = marshal(
        ("model", MODEL),
        ("dtype", "auto"),
        ("additional_args", ["--max-model-len", "2048"]),
    )
    up = up_like_newest_client(rest, up_body)
    assert up.status == 200, up.body
    state = wait_state(rest, "INFERENCE")
    assert state["state"] == "INFERENCE" and state["loaded_model"] == MODEL
    assert state["poc_validation_inference"] is True

    # N4 health, N5 loaded models, V1 versions.
    assert inf.get("/health").status == 200
    models = ok_json(inf.get("/v1/models"), below=300)
    assert models["data"][0]["id"] == MODEL
    versions = ok_json(rest.get("/api/v1/versions"), below=300)
    assert versions["vllm_version"] and versions["poc_validation_inference"] is True
    pow_versions = ok_json(rest.get("/api/v1/inference/pow/versions"), below=300)
    assert pow_versions["vllm_version"] and pow_versions["poc_validation_inference"] is True

    # N7 InitGenerateV2 (no /stop first: the node stays INFERENCE).
    init = ok_json(
        rest.post(
            "/api/v1/inference/pow/init/generate",
            marshal(
                *PROVER,
                ("params", {"model": MODEL, "seq_len": 256}),
                ("url", callback),
            ),
        )
    )
    assert init["status"] == "OK" and init["backends"] == 2 and init["n_groups"] == 2
    assert len(init["results"]) == 2 and init["errors"] is None
    assert ok_json(rest.get("/api/v1/state"))["state"] == "INFERENCE"

    # N6 GetPowStatusV2.
    status = ok_json(rest.get("/api/v1/inference/pow/status"))
    assert status["status"] == "GENERATING"
    assert [set(b) >= {"port", "status"} for b in status["backends"]] == [True, True]

    # The engines' callbacks reach the network node's URL unchanged.
    batches = receiver.wait_for(
        f"/v2/poc-batches/{MODEL_SEGMENT}/generated", lambda b: len(b) >= 2, 20
    )
    nonces = [a["nonce"] for b in batches for a in b["artifacts"]]
    assert len(nonces) == len(set(nonces)) and {b["block_height"] for b in batches} == {1234}

    # N9 StopPowV2.
    stop = ok_json(rest.post("/api/v1/inference/pow/stop", b"{}"))
    assert stop["status"] == "OK" and len(stop["results"]) == 2 and stop["errors"] is None
    assert ok_json(rest.get("/api/v1/inference/pow/status"))["status"] == "IDLE"

    # N8 GenerateV2 (validation), queued; the verdict arrives on /validated.
    sample = [0, 1, 2, 3]
    artifacts = [
        {"nonce": n, "vector_b64": artifact("0xblock", "prover-pk", n, 12)} for n in sample
    ]
    queued = ok_json(
        rest.post(
            "/api/v1/inference/pow/generate",
            marshal(
                *PROVER,
                ("nonces", sample),
                ("params", {"model": MODEL, "seq_len": 256}),
                ("url", callback),
                ("validation", {"artifacts": artifacts}),
                (
                    "stat_test",
                    {"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.05},
                ),
            ),
        )
    )
    assert queued["status"] == "queued" and ":" in queued["request_id"]
    verdicts = receiver.wait_for(
        f"/v2/poc-batches/{MODEL_SEGMENT}/validated", lambda b: len(b) >= 1, 20
    )
    assert verdicts[0]["n_total"] == 4 and verdicts[0]["n_mismatch"] == 0
    assert verdicts[0]["fraud_detected"] is False and verdicts[0]["public_key"] == "prover-pk"
    result = ok_json(rest.get(f"/api/v1/inference/pow/generate/{queued['request_id']}"))
    assert result["request_id"] == queued["request_id"] and result["status"] == "completed"

    # N10-N14 model management (this node is offline: HF_HUB_OFFLINE=1).
    hf = marshal(("hf_repo", MODEL), ("hf_commit", None))
    checked = ok_json(rest.post("/api/v1/models/status", hf), below=300)
    assert checked["status"] == "NOT_FOUND" and checked["model"]["hf_repo"] == MODEL
    assert {"progress", "error_message"} <= set(checked)
    download = ok_json(rest.post("/api/v1/models/download", hf), below=300)
    assert download["status"] == "IGNORED" and set(download) >= {"task_id", "model"}
    deleted = rest.send("DELETE", "/api/v1/models", hf, content_type="application/json")
    assert deleted.status == 200 and deleted.json()["status"] in ("DELETED", "NOT_FOUND")
    assert ok_json(rest.get("/api/v1/models/list"), below=300)["models"] == []
    space = ok_json(rest.get("/api/v1/models/space"), below=300)
    assert space["cache_path"].endswith("hub") and space["available_gb"] > 0
    bad = rest.post("/api/v1/models/status", marshal(("hf_repo", "../x"), ("hf_commit", None)))
    assert bad.status == 422 and not retryable(bad.status)

    # N15/N16: NVML; without an NVIDIA driver count 0 and a 503, never a 500.
    devices = ok_json(rest.get("/api/v1/gpu/devices"), below=300)
    assert devices["count"] == len(devices["devices"])
    driver = rest.get("/api/v1/gpu/driver")
    assert driver.status in (200, 503) and driver.json()

    # N17 executor (Content-Type copied from the user), N18 validator, M12 tokenize.
    chat = marshal(
        ("model", MODEL),
        ("messages", [{"role": "user", "content": "hi"}]),
        ("logprobs", True),
        ("top_logprobs", 5),
        ("max_tokens", 64),
        ("skip_special_tokens", False),
        ("return_token_ids", True),
        ("seed", 7),
    )
    assert inf.send("POST", "/v1/chat/completions", chat, "application/json").status == 200
    assert inf.post("/v1/chat/completions", chat).status == 200
    tokens = ok_json(
        inf.send(
            "POST", "/tokenize", marshal(("model", MODEL), ("prompt", "a b c")), "application/json"
        )
    )
    assert tokens["count"] == 3

    # One base URL (VARIANT): health at /readyz, inference on the REST port.
    assert rest.get("/readyz").status == 200
    assert ok_json(rest.get("/v1/models"))["data"][0]["id"] == MODEL
    assert rest.post("/v1/chat/completions", chat).status == 200
    streamed = rest.post("/v1/completions", marshal(("prompt", "hi"), ("stream", True)))
    assert streamed.status == 200 and streamed.headers["content-type"] == "text/event-stream"
    assert streamed.body.count(b"data: ") == 6 and streamed.body.endswith(b"data: [DONE]\n\n")
    assert ok_json(rest.post("/tokenize", marshal(("prompt", "a b"))))["count"] == 2

    # N2 Stop while PoC v2 runs: exactly 200 (the newest client reads anything else as an error).
    init_again = rest.post(
        "/api/v1/inference/pow/init/generate",
        marshal(
            ("block_hash", "0xblock2"),
            ("block_height", 1235),
            ("public_key", "prover-pk"),
            ("node_id", 0),
            ("node_count", 1),
            ("params", {"model": MODEL, "seq_len": 256}),
            ("url", callback),
        ),
    )
    assert ok_json(init_again)["status"] == "OK"
    assert ok_json(rest.get("/api/v1/inference/pow/status"))["status"] == "GENERATING"
    assert rest.post("/api/v1/stop").status == 200
    assert wait_state(rest, "STOPPED")["state"] == "STOPPED"
    assert ok_json(rest.get("/api/v1/inference/pow/status"))["status"] == "NO_BACKENDS"

    # A slow engine start: 503 `starting` (retryable, Retry-After) instead of a 202 the client
    # would read as permanent; /stop while it loads is 200; the retried request ends in 200.
    slow = marshal(("model", MODEL), ("dtype", "auto"), ("additional_args", ["--start-delay", "4"]))
    first = rest.post("/api/v1/inference/up", slow)
    assert first.status == 503 and retryable(first.status), first.body
    assert first.json()["error"]["code"] == "starting" and first.headers["retry-after"]
    assert rest.post("/api/v1/stop").status == 200
    assert wait_state(rest, "STOPPED")["state"] == "STOPPED"
    assert up_like_newest_client(rest, slow).status == 200
    assert ok_json(inf.get("/v1/models"), below=300)["data"][0]["id"] == MODEL
    refused = rest.post("/api/v1/inference/up", marshal(("model", MODEL), ("dtype", 7)))
    assert refused.status in PERMANENT, refused.body
    assert rest.post("/api/v1/stop").status == 200
    assert wait_state(rest, "STOPPED")["state"] == "STOPPED"


@pytest.mark.parametrize("prefix", ["", "/v3.0.8"], ids=["plain", "versioned"])
def test_2025_08_client(node: MLNodeProcess, prefix: str) -> None:
    rest, inf = clients(node, prefix)
    # M4 NodeState, M5 GetPowStatus (v1).
    assert ok_json(rest.get("/api/v1/state"))["state"] == "STOPPED"
    pow_status = ok_json(rest.get("/api/v1/pow/status"), below=300)
    assert pow_status["status"] == "NOT_LOADED" and pow_status["is_model_initialized"] is False
    # M9 InferenceUp with a nil additional_args, M10 health, M11 chat, M12 tokenize.
    up = rest.post(
        "/api/v1/inference/up", b'{"model":"tiny","dtype":"float16","additional_args":null}'
    )
    # This client ignores the status (a slow start answers 503) and goes on once /health is 200.
    assert up.status in (200, 503), up.body
    wait_until(lambda: inf.get("/health").status, lambda s: s == 200, timeout_s=30)
    chat = b'{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":5}'
    assert inf.send("POST", "/v1/chat/completions", chat, "application/json").status == 200
    tokenize = b'{"model":"tiny","prompt":"one two"}'
    assert ok_json(inf.send("POST", "/tokenize", tokenize, "application/json"))["count"] == 2
    # M1 StartTraining while inference runs: a conflict or a 422 naming what is missing.
    train = (
        b'{"train_config":{"project":"p","name":"n","description":"","group":"g","tags":[],'
        b'"train":{"micro_bs":1,"eval_interval":10},"data":{"seq_length":128},'
        b'"optim":{"sched_type":"cosine","batch_size":8,"warmup_steps":1,"total_steps":10,'
        b'"adam_betas1":0.9,"adam_betas2":0.95,"weight_decay":0.1,"lr":0.0004},'
        b'"diloco":{"inner_steps":5},"ckpt":{"interval":1,"topk":2,"path":"ckpt"}},'
        b'"train_env":{"TASK_ID":7,"NODE_ID":"n","STORE_API_URL":"http://127.0.0.1:1",'
        b'"GLOBAL_ADDR":"127.0.0.1","GLOBAL_PORT":"29500","GLOBAL_RANK":"0",'
        b'"GLOBAL_UNIQUE_ID":"u","GLOBAL_WORLD_SIZE":"1","BASE_PORT":"10000"}}'
    )
    refused = rest.post("/api/v1/train/start", train)
    assert refused.status == 422 and "model" in refused.json()["error"]["message"]
    # M2 GET on the start path (the client's bug): 405 in the one error shape.
    wrong = rest.get("/api/v1/train/start")
    assert wrong.status == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    # M3 Stop.
    assert rest.post("/api/v1/stop").status == 200
    assert wait_state(rest, "STOPPED")["state"] == "STOPPED"


def test_token_guards_both_ports(node: MLNodeProcess) -> None:
    if getattr(node, "token", None) is None:
        pytest.skip("this node runs without MLNODE_API_TOKEN")
    rest = GoClient(node.port, prefix="/v3.0.8")
    inf = GoClient(node.inference_port, prefix="/v3.0.8")
    assert rest.get("/api/v1/state").status == 401
    assert rest.get("/livez").status == 200
    assert inf.get("/v1/models").status == 401
    assert inf.post("/tokenize", b"{}").json()["error"]["code"] == "unauthorized"
    assert inf.get("/health").status == 503 and inf.get("/livez").status == 200
    missing = GoClient(node.port, token=TOKEN).get("/api/v1/nothing")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
