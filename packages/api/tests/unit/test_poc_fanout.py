"""pow's PoC v2 fan-out over the engines infer serves (two real test-engine processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlnode.common.errors import BadRequest, NotFound, Unavailable
from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.infer.schemas import InferenceUpRequest
from mlnode.infer.testing.support import ServiceFactory, fake_services
from mlnode.pow.engine.testing import artifact
from mlnode.pow.fanout.fanout import AllBackendsFailed, PocFanout, init_bodies
from mlnode.pow.poc.schemas import PocGenerateBody, PocInitGenerateBody

NODE_ID, NODE_COUNT = 1, 3
CALLBACK_PATH = "/v2/poc-batches/Qwen%252FQwen3"
#: The engine plugin's own settings: callbacks every 0.2 s, validation alongside inference.
POC_ENGINE_ENV = {
    "MLNODE_POC_CALLBACK_INTERVAL_S": "0.2",
    "MLNODE_POC_VALIDATION_INFERENCE": "true",
}


def init_body(url: str | None = None, model: str = "tiny") -> PocInitGenerateBody:
    body = {
        "block_hash": "abc",
        "block_height": 12,
        "public_key": "pk",
        "node_id": NODE_ID,
        "node_count": NODE_COUNT,
        "params": {"model": model, "seq_len": 128},
    }
    if url is not None:
        body["url"] = url
    return PocInitGenerateBody.model_validate(body)


def generate_body(nonces: list[int], url: str, **extra: object) -> PocGenerateBody:
    body = {
        "block_hash": "abc",
        "block_height": 12,
        "public_key": "pk",
        "node_id": 0,
        "node_count": 1,
        "nonces": nonces,
        "params": {"model": "tiny", "seq_len": 128},
        "url": url,
        **extra,
    }
    return PocGenerateBody.model_validate(body)


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    async with fake_services(tmp_path) as make:
        yield make


@pytest.fixture
async def two_engines(make_service):
    service = await make_service(gpus=[0, 1], engine_env=POC_ENGINE_ENV)
    await service.up(InferenceUpRequest(model="tiny"))
    yield service


@pytest.fixture
def receiver():
    with CallbackReceiver() as started:
        yield started


async def test_mining_groups_are_disjoint_and_status_follows_each_instance(
    two_engines, receiver
) -> None:
    fanout = PocFanout(two_engines)
    url = f"{receiver.url}{CALLBACK_PATH}"

    summary = await fanout.init_generate(init_body(url))

    ports = sorted(b.port for b in fanout.backends())
    assert summary.status == "OK" and summary.backends == 2 and summary.n_groups == 2
    assert [r.port for r in summary.results] == ports and summary.errors is None
    status = await fanout.status()
    assert status.status == "GENERATING"
    assert [b.non_finite_dropped for b in status.backends] == [0, 0]
    assert [
        (b.port, (b.config or {})["group_id"], (b.config or {})["n_groups"])
        for b in status.backends
    ] == [
        (ports[0], 0, 2),
        (ports[1], 1, 2),
    ]
    batches = receiver.wait_for(f"{CALLBACK_PATH}/generated", lambda bodies: len(bodies) >= 2, 20)
    assert {b["node_id"] for b in batches} == {NODE_ID}
    nonces = [a["nonce"] for b in batches for a in b["artifacts"]]
    assert len(nonces) == len(set(nonces)), "the two instances mined a nonce twice"
    # nonce = node_id + group_id * node_count + x * n_groups * node_count
    groups = {(n - NODE_ID) % (2 * NODE_COUNT) // NODE_COUNT for n in nonces}
    assert all((n - NODE_ID) % NODE_COUNT == 0 for n in nonces) and groups == {0, 1}
    first = batches[0]
    assert set(first) == {
        "public_key",
        "block_hash",
        "block_height",
        "node_id",
        "artifacts",
        "encoding",
    }
    assert first["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}
    sample = first["artifacts"][0]
    assert sample["vector_b64"] == artifact("abc", "pk", sample["nonce"], 12)

    async with httpx.AsyncClient(timeout=30) as client:
        stopped = await client.post(f"http://127.0.0.1:{ports[1]}/api/v1/pow/stop", json={})
    assert stopped.status_code == 200
    mixed = await fanout.status()
    assert mixed.status == "MIXED"
    assert [b.status for b in mixed.backends] == ["GENERATING", "IDLE"]

    stop = await fanout.stop()
    assert [(r.port, r.status) for r in stop.results] == [
        (ports[0], "stopped"),
        (ports[1], "stopped"),
    ]
    assert (await fanout.status()).status == "IDLE"


async def test_queued_generate_ids_name_their_instance(two_engines, receiver) -> None:
    fanout = PocFanout(two_engines)
    url = f"{receiver.url}{CALLBACK_PATH}"
    ports = {b.port for b in fanout.backends()}
    ids = []
    for nonces in ([1, 2, 3], [4, 5]):
        status, body = await fanout.generate(generate_body(nonces, url))
        assert status == 200 and body["status"] == "queued"
        ids.append(body["request_id"])
    assert {int(i.split(":")[0]) for i in ids} == ports, "round robin reaches both instances"

    results: list[dict[str, Any]] = []
    for _ in range(400):
        results = [(await fanout.generate_result(i))[1] for i in ids]
        if all(r["status"] == "completed" for r in results):
            break
        await asyncio.sleep(0.05)
    assert [r["request_id"] for r in results] == ids
    assert [a["nonce"] for a in results[0]["artifacts"]] == [1, 2, 3]
    callbacks = receiver.wait_for(f"{CALLBACK_PATH}/generated", lambda b: len(b) >= 2, 20)
    assert {c["request_id"] for c in callbacks} == {i.split(":", 1)[1] for i in ids}


async def test_validation_waits_and_counts_mismatches(two_engines, receiver) -> None:
    fanout = PocFanout(two_engines)
    nonces = list(range(10))
    honest = [{"nonce": n, "vector_b64": artifact("abc", "pk", n, 12)} for n in nonces]
    forged = honest[:5] + [
        {"nonce": n, "vector_b64": artifact("xyz", "pk", n, 12)} for n in nonces[5:]
    ]
    stat = {"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.05}
    for artifacts, mismatches in ((honest, 0), (forged, 5)):
        status, body = await fanout.generate(
            generate_body(
                nonces,
                f"{receiver.url}{CALLBACK_PATH}",
                wait=True,
                validation={"artifacts": artifacts},
                stat_test=stat,
            )
        )
        assert status == 200 and body["n_total"] == 10 and body["n_mismatch"] == mismatches
        assert body["fraud_detected"] is (mismatches > 0)
    status, body = await fanout.generate(
        generate_body(nonces, receiver.url, validation={"artifacts": honest[:3]})
    )
    assert status == 400 and body["error"]["param"] == "validation.artifacts"


async def test_refusals_and_no_backends(make_service, two_engines) -> None:
    fanout = PocFanout(two_engines)
    with pytest.raises(AllBackendsFailed) as failed:
        await fanout.init_generate(init_body(model="other"))
    assert [e.port for e in failed.value.errors] == sorted(b.port for b in fanout.backends())
    assert "errors" in failed.value.to_body() and failed.value.status_code == 502
    with pytest.raises(BadRequest):
        await fanout.generate_result("not-an-id")
    with pytest.raises(NotFound):
        await fanout.generate_result("1:abc")
    versions = await fanout.versions()
    assert versions.poc_validation_inference is True and versions.vllm_version

    idle = PocFanout(await make_service())
    assert (await idle.status()).status == "NO_BACKENDS"
    assert (await idle.stop()).message == "No backends to stop"
    with pytest.raises(Unavailable):
        await idle.init_generate(init_body())


def test_init_forwards_a_batch_size_only_when_the_caller_sent_one() -> None:
    go_body = init_body("http://127.0.0.1:9/cb")  # the newest network node sends none
    bodies = init_bodies(go_body, 2)
    assert [("batch_size" in b, b["group_id"], b["n_groups"]) for b in bodies] == [
        (False, 0, 2),
        (False, 1, 2),
    ]
    sent = PocInitGenerateBody.model_validate({**go_body.model_dump(), "batch_size": 8})
    assert [b["batch_size"] for b in init_bodies(sent, 2)] == [8, 8]
