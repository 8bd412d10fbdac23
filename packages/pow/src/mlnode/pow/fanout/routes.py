"""PoC v2 routes of the node, `/api/v1/inference/pow/*`: thin, over `PocFanout` (see `fanout`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mlnode.pow.deps import PocFanoutDep
from mlnode.pow.fanout.schemas import (
    PocInitResponse,
    PocStatusResponse,
    PocStopRequest,
    PocStopResponse,
)
from mlnode.pow.poc.schemas import PocGenerateBody, PocInitGenerateBody, PocVersions

router = APIRouter(prefix="/inference/pow", tags=["poc-v2"])

_ERRORS: dict[int | str, dict[str, str]] = {
    502: {"description": "Every engine instance failed; `errors` lists each one."},
    503: {"description": "No engine instance serves (inference is not running)."},
}


@router.post("/init/generate", operation_id="poc_init_generate", responses=_ERRORS)
async def poc_init_generate(body: PocInitGenerateBody, fanout: PocFanoutDep) -> PocInitResponse:
    """Start PoC v2 mining on every engine instance, each with its nonce group."""
    return await fanout.init_generate(body)


@router.post("/generate", operation_id="poc_generate", responses=_ERRORS)
async def poc_generate(body: PocGenerateBody, fanout: PocFanoutDep) -> JSONResponse:
    """Compute or validate nonces on one instance; the engine's answer and status."""
    status, payload = await fanout.generate(body)
    return JSONResponse(payload, status_code=status)


@router.get("/generate/{request_id}", operation_id="poc_generate_result", responses=_ERRORS)
async def poc_generate_result(request_id: str, fanout: PocFanoutDep) -> JSONResponse:
    """State or result of a queued `/generate` (`<port>:<id>`)."""
    status, payload = await fanout.generate_result(request_id)
    return JSONResponse(payload, status_code=status)


@router.get("/status", operation_id="poc_status")
async def poc_status(fanout: PocFanoutDep) -> PocStatusResponse:
    """GENERATING / IDLE / MIXED / NO_BACKENDS with each instance's status."""
    return await fanout.status()


@router.post("/stop", operation_id="poc_stop")
async def poc_stop(fanout: PocFanoutDep, body: PocStopRequest | None = None) -> PocStopResponse:
    """Stop PoC v2 on every instance."""
    return await fanout.stop()


# Unset fields stay out: an engine without PoC routes reports no `gonka_poc_version`.
@router.get(
    "/versions", operation_id="poc_versions", responses=_ERRORS, response_model_exclude_unset=True
)
async def poc_versions(fanout: PocFanoutDep) -> PocVersions:
    """The engine's vLLM version and whether it serves inference during PoC validation."""
    return await fanout.versions()
