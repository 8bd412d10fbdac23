"""The engine's PoC routes on a FastAPI app as vLLM builds it, over the real runner.

The runner's engine is a stand-in whose chunks go through the real artifact maths (see
test_poc_engine_runner.py); the plugin, routes, body parsing and error shapes are the real ones.
"""

import asyncio
from argparse import Namespace
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI

from mlnode.pow.engine.callbacks import CallbackSender
from mlnode.pow.engine.checks import EngineFacts
from mlnode.pow.engine.errors import PocHttpError
from mlnode.pow.engine.plugin import PocEndpointPlugin, stop_before_engine
from mlnode.pow.engine.protocol import ChunkSpec
from mlnode.pow.engine.routes import MAX_BODY_BYTES, STATE_KEY, render
from mlnode.pow.engine.runner import PocRunner
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.engine.worker import WORKER_EXTENSION
from mlnode.pow.poc.artifacts import artifacts_from_hidden
from mlnode.pow.poc.schemas import GenerateStatus, PocInitGenerateRequest, PocJobStatus

ROUTES = {
    ("POST", "/api/v1/pow/init/generate"),
    ("POST", "/api/v1/pow/generate"),
    ("GET", "/api/v1/pow/generate/{request_id}"),
    ("GET", "/api/v1/pow/status"),
    ("POST", "/api/v1/pow/stop"),
    ("GET", "/api/v1/pow/versions"),
}


class StandInEngine:
    async def call(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        assert payload is not None
        spec = ChunkSpec.from_wire(payload)
        await asyncio.sleep(0.01)
        hidden = torch.stack(
            [torch.randn(64, generator=torch.Generator().manual_seed(n)) for n in spec.nonces]
        )
        found = artifacts_from_hidden(hidden, "bh", "pk", spec.nonces, spec.k_dim)
        return [[a.nonce, a.vector_b64] for a in found]

    def chat_in_flight(self) -> int:
        return 0


async def facts() -> EngineFacts:
    return EngineFacts(("m",), "Qwen3ForCausalLM", hidden=64, max_model_len=2048)


def pow_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(METHOD, path) of the PoC routes, as the app's OpenAPI document lists them."""
    paths = app.openapi()["paths"]
    return {
        (method.upper(), path)
        for path, methods in paths.items()
        if path.startswith("/api/v1/pow")
        for method in methods
    }


def app_with(extension: str) -> FastAPI:
    app = FastAPI()
    app.state.args = Namespace(worker_extension_cls=extension, served_model_name=None, model="m")
    PocEndpointPlugin().attach_router(app)
    return app


def test_no_route_exists_without_the_worker_extension() -> None:
    assert pow_routes(app_with("")) == set()
    assert pow_routes(app_with("some.other.Extension")) == set()
    assert pow_routes(app_with(WORKER_EXTENSION)) == ROUTES


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = app_with(WORKER_EXTENSION)
    settings = PocEngineSettings(_env_file=None)
    runner = PocRunner(StandInEngine(), facts, settings, CallbackSender(settings))
    runner.start()
    setattr(app.state, STATE_KEY, runner)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as c:
        yield c
    await runner.shutdown()


BLOCK = {"block_hash": "bh", "block_height": 2, "public_key": "pk", "node_id": 0, "node_count": 1}
PARAMS = {"model": "m", "seq_len": 8}


async def test_generate_without_content_type_answers_artifacts(client: httpx.AsyncClient) -> None:
    body = httpx.Request(
        "POST", "/", json={**BLOCK, "nonces": [4, 2], "params": PARAMS, "wait": True}
    )
    answer = await client.post("/api/v1/pow/generate", content=body.content)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["status"] == "completed" and [a["nonce"] for a in got["artifacts"]] == [4, 2]
    assert got["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}


@pytest.mark.parametrize(
    ("content", "status", "code", "param"),
    [
        (b"{not json", 400, "bad_request", None),
        (b'{"nonces": [1]}', 422, "invalid_request", "block_hash"),
        (b'{"block_hash": "bh", "block_height": 1, "public_key": "pk", "node_id": 0, '
         b'"nonces": [1], "params": {"model": "m", "seq_len": 0}}', 422, "invalid_request",
         "params.seq_len"),
        (b'{"block_hash": "bh", "block_height": 1, "public_key": "pk", "node_id": 0, '
         b'"nonces": [1], "params": {"model": "x", "seq_len": 8}}', 409, "conflict",
         "params.model"),
        (b'{"block_hash": "bh", "block_height": 1, "public_key": "pk", "node_id": 0, '
         b'"nonces": [1], "params": {"model": "m", "seq_len": 8}, "url": "http://[::1"}',
         422, "invalid_request", "url"),
    ],
)  # fmt: skip
async def test_refusals_have_the_nodes_error_shape(
    client: httpx.AsyncClient, content: bytes, status: int, code: str, param: str | None
) -> None:
    answer = await client.post("/api/v1/pow/generate", content=content)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("PocHttpError", code, param)
    assert error["message"] and set(error) == {"type", "message", "code", "param"}


async def test_an_oversized_body_is_refused_before_parsing(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/pow/generate", content=b" " * (MAX_BODY_BYTES + 1))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large"


async def test_queued_job_then_status_then_stop(client: httpx.AsyncClient) -> None:
    queued = await client.post(
        "/api/v1/pow/generate", json={**BLOCK, "nonces": [1, 2, 3], "params": PARAMS}
    )
    request_id = queued.json()["request_id"]
    assert queued.json()["queued_count"] == 3
    for _ in range(200):
        state = (await client.get(f"/api/v1/pow/generate/{request_id}")).json()
        if state["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    assert [a["nonce"] for a in state["artifacts"]] == [1, 2, 3]
    assert (await client.get("/api/v1/pow/generate/unknown")).status_code == 404

    mining = {**BLOCK, "params": PARAMS, "batch_size": 4}
    started = await client.post("/api/v1/pow/init/generate", json=mining)
    assert started.json() == {"status": "OK", "pow_status": {"status": "GENERATING"}}
    status = (await client.get("/api/v1/pow/status")).json()
    assert status["status"] == "GENERATING" and status["config"]["seq_len"] == 8
    stopped = await client.post("/api/v1/pow/stop", content=b"{}")
    assert stopped.json() == {"status": "OK", "pow_status": {"status": "STOPPED"}}
    assert (await client.get("/api/v1/pow/status")).json()["status"] == "IDLE"
    assert (await client.get(f"/api/v1/pow/generate/{request_id}")).status_code == 404


async def test_the_engine_shutdown_stops_poc_first() -> None:
    settings = PocEngineSettings(_env_file=None)
    runner = PocRunner(StandInEngine(), facts, settings, CallbackSender(settings))
    runner.start()
    seen: list[str] = []

    class EngineClient:
        def shutdown(self, timeout: float | None = None) -> None:
            seen.append(f"engine shutdown, PoC mining: {runner.status().status.value}")

    client = EngineClient()
    stop_before_engine(client, runner)
    mining = {**BLOCK, "params": PARAMS, "batch_size": 2}
    await runner.init_generate(PocInitGenerateRequest.model_validate(mining))
    # vLLM calls it from an executor thread while the loop keeps running.
    await asyncio.get_running_loop().run_in_executor(None, client.shutdown)
    assert seen == ["engine shutdown, PoC mining: IDLE"]
    with pytest.raises(PocHttpError) as refused:
        await runner.init_generate(PocInitGenerateRequest.model_validate(mining))
    assert refused.value.status == 503
    client.shutdown()  # from the loop's own thread: no wait, no deadlock
    await runner.shutdown()


def test_a_waited_answer_without_a_verdict_says_so_and_keeps_the_exclusions() -> None:
    stored = PocJobStatus(
        status=GenerateStatus.COMPLETED,
        request_id="r",
        n_total=8,
        n_mismatch=0,
        mismatch_nonces=[],
        n_nan_steps=2,
        n_excluded=2,
        excluded_nonces=[3, 4],
        no_verdict="2 of 10 nonces could not be scored",
    )
    body = render(stored).model_dump(mode="json")
    assert body["p_value"] is None and body["fraud_detected"] is None
    assert (body["n_total"], body["n_excluded"], body["excluded_nonces"]) == (8, 2, [3, 4])
    assert body["n_nan_steps"] == 2 and body["no_verdict"].startswith("2 of 10")
