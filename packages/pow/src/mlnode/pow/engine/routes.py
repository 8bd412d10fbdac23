"""The PoC v2 routes inside vLLM's API server (SPEC §4.1), under `/api/v1/pow`.

Bodies are read whatever their Content-Type (the network node's Go client sends none), bounded in
size, and validated here so that every refusal has the project's error shape and names its field.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from mlnode.pow.engine.checks import nonce_sets_differ
from mlnode.pow.engine.errors import PocHttpError, from_validation_error
from mlnode.pow.engine.runner import PocRunner
from mlnode.pow.engine.status import EngineStatus
from mlnode.pow.poc.schemas import (
    GenerateStatus,
    PocGenerateQueued,
    PocGenerateRequest,
    PocGenerateResult,
    PocInitGenerateRequest,
    PocInitGenerateResponse,
    PocJobStatus,
    PocStopResponse,
    PocValidationResult,
    PocVersions,
)

#: Largest request body read (100 000 artifacts of a few hundred bytes fit).
MAX_BODY_BYTES = 64 << 20
STATE_KEY = "mlnode_poc"
VERSIONS_KEY = "mlnode_poc_versions"

Body = TypeVar("Body", bound=BaseModel)
router = APIRouter(prefix="/api/v1/pow", tags=["PoC v2"])


def get_runner(request: Request) -> PocRunner:
    """The engine's `PocRunner` (503 before the engine is ready)."""
    runner: PocRunner | None = getattr(request.app.state, STATE_KEY, None)
    if runner is None:
        raise PocHttpError(503, "the PoC runner is not ready (no engine attached yet)")
    return runner


RunnerDep = Annotated[PocRunner, Depends(get_runner)]


async def read_json(request: Request) -> Any:
    """The body as JSON, at most `MAX_BODY_BYTES` (413 beyond, 400 when it is not JSON)."""
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > MAX_BODY_BYTES:
            raise PocHttpError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(data or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PocHttpError(400, f"request body is not JSON: {exc}") from exc


def parse(model: type[Body], raw: Any) -> Body:
    """Validate a body; 422 naming the first invalid field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def render(result: PocJobStatus) -> BaseModel:
    """A finished job as `/generate` answers it with wait=true (503 when it failed)."""
    if result.status is not GenerateStatus.COMPLETED:
        raise PocHttpError(503, result.error or "the PoC job failed")
    if result.artifacts is not None and result.encoding is not None:
        return PocGenerateResult(
            request_id=result.request_id, artifacts=result.artifacts, encoding=result.encoding
        )
    return PocValidationResult(request_id=result.request_id, **result.verdict())


@router.post("/init/generate", response_model=PocInitGenerateResponse)
async def init_generate(request: Request, runner: RunnerDep) -> PocInitGenerateResponse:
    """Mine this engine's share of the nonce space until `/stop`."""
    await runner.init_generate(parse(PocInitGenerateRequest, await read_json(request)))
    return PocInitGenerateResponse()


@router.post("/generate", response_model=None)
async def generate(request: Request, runner: RunnerDep) -> BaseModel:
    """Compute given nonces: queued (wait=false) or answered (wait=true), judged with validation."""
    raw = await read_json(request)
    if nonce_sets_differ(raw):
        raise PocHttpError(
            400,
            "validation.artifacts must carry exactly the nonces of `nonces`",
            "validation.artifacts",
        )
    req = parse(PocGenerateRequest, raw)
    job = await runner.submit(req)
    if not req.wait:
        return PocGenerateQueued(request_id=job.request_id, queued_count=len(req.nonces))
    # The job survives a client that goes away; its result stays readable by id.
    return render(await asyncio.shield(job.future))


@router.get("/generate/{request_id}", response_model=None)
async def generate_status(request_id: str, runner: RunnerDep) -> JSONResponse:
    """A job's state, then its result or error (kept `MLNODE_POC_RESULT_TTL_S`)."""
    status = runner.job_status(request_id)
    if status is None:
        raise PocHttpError(404, f"no PoC job {request_id!r} (unknown or expired)", "request_id")
    return JSONResponse(status.model_dump(mode="json", exclude_none=True))


@router.get("/status", response_model=EngineStatus)
async def status(runner: RunnerDep) -> EngineStatus:
    """IDLE or GENERATING, the mining config and counters, queue and callback counters."""
    return runner.status()


@router.post("/stop", response_model=PocStopResponse)
async def stop(runner: RunnerDep) -> PocStopResponse:
    """Stop mining, drop queued jobs and stored results, wait for the chunk in flight."""
    await runner.stop()
    return PocStopResponse()


@router.get("/versions", response_model=PocVersions)
async def versions(request: Request) -> PocVersions:
    """VLLM's version, this implementation's, and whether inference goes on during validation."""
    found: PocVersions | None = getattr(request.app.state, VERSIONS_KEY, None)
    if found is None:
        raise PocHttpError(503, "the PoC runner is not ready (no engine attached yet)")
    return found


async def error_response(_request: Request, exc: Exception) -> JSONResponse:
    """Render a `PocHttpError` in the project's error shape."""
    if not isinstance(exc, PocHttpError):
        raise exc
    return JSONResponse(exc.body(), status_code=exc.status)
