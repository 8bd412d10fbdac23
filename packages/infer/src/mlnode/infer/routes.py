"""Routes of mlnode-infer, mounted by mlnode-api under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from mlnode.infer.deps import InferServiceDep
from mlnode.infer.schemas import (
    InferenceStatus,
    InferenceUpRequest,
    InferenceUpResponse,
    InferenceUpStatus,
)

router = APIRouter(prefix="/inference", tags=["inference"])

_ERRORS: dict[int | str, dict[str, str]] = {
    409: {"description": "Another service runs, or inference is running or starting already."},
    422: {"description": "Invalid request or additional_args (e.g. --host, --port)."},
}


@router.post(
    "/up",
    operation_id="inference_up",
    responses={
        **_ERRORS,
        502: {"description": "The engine failed to start; the log tail."},
        503: {
            "description": "Still loading after MLNODE_INFER_UP_WAIT_S (code `starting`, "
            "Retry-After): send the same request again to keep waiting."
        },
    },
)
async def inference_up(body: InferenceUpRequest, service: InferServiceDep) -> InferenceUpResponse:
    """Start the engines and answer 200 once they serve (503 `starting` if they take long)."""
    return await service.up(body)


@router.post("/up/async", operation_id="inference_up_async", status_code=202, responses=_ERRORS)
async def inference_up_async(
    body: InferenceUpRequest, service: InferServiceDep
) -> InferenceUpResponse:
    """Start the engines in the background; poll /inference/up/status."""
    return await service.up_async(body)


@router.get("/up/status", operation_id="inference_up_status")
async def inference_up_status(service: InferServiceDep) -> InferenceUpStatus:
    """Start-up phase (starting / running / failed) with the error."""
    return service.up_status()


@router.post("/down", operation_id="inference_down")
async def inference_down(service: InferServiceDep) -> InferenceUpResponse:
    """Stop every engine."""
    return await service.down()


@router.get("/status", operation_id="inference_status")
async def inference_status(service: InferServiceDep) -> InferenceStatus:
    """Instances, ports, health, model, arguments, restarts and requests in flight."""
    return service.inference_status()
