"""Routes of mlnode-pow, mounted by mlnode-api under /api/v1 (the network node's contract)."""

from __future__ import annotations

from fastapi import APIRouter

from mlnode.pow.deps import PowServiceDep
from mlnode.pow.v1.schemas import PowAccepted, PowInitRequest, PowPhase, PowStatus, ProofBatch

router = APIRouter(prefix="/pow", tags=["pow"])


@router.post("/init", operation_id="pow_init", response_model=PowStatus)
async def init(body: PowInitRequest, service: PowServiceDep) -> PowStatus:
    """Load the seeded model for a block and stay idle."""
    return await service.init(body, PowPhase.IDLE)


@router.post("/init/generate", operation_id="pow_init_generate", response_model=PowStatus)
async def init_generate(body: PowInitRequest, service: PowServiceDep) -> PowStatus:
    """Load the model (reused when unchanged) and search for proofs."""
    return await service.init(body, PowPhase.GENERATING)


@router.post("/init/validate", operation_id="pow_init_validate", response_model=PowStatus)
async def init_validate(body: PowInitRequest, service: PowServiceDep) -> PowStatus:
    """Load the model (reused when unchanged) and validate received batches."""
    return await service.init(body, PowPhase.VALIDATING)


@router.post("/phase/generate", operation_id="pow_phase_generate", response_model=PowStatus)
async def phase_generate(service: PowServiceDep) -> PowStatus:
    """Switch the loaded job to generating."""
    return await service.set_phase(PowPhase.GENERATING)


@router.post("/phase/validate", operation_id="pow_phase_validate", response_model=PowStatus)
async def phase_validate(service: PowServiceDep) -> PowStatus:
    """Switch the loaded job to validating (generation pauses)."""
    return await service.set_phase(PowPhase.VALIDATING)


@router.post("/validate", operation_id="pow_validate", response_model=PowAccepted)
async def validate(body: ProofBatch, service: PowServiceDep) -> PowAccepted:
    """Queue a received ProofBatch; its ValidatedBatch goes to `{url}/validated`."""
    return await service.submit_validation(body)


@router.get("/status", operation_id="pow_status", response_model=PowStatus)
async def status(service: PowServiceDep) -> PowStatus:
    """Phase, model, counters and delivery figures."""
    return service.pow_status()


@router.post("/stop", operation_id="pow_stop", response_model=PowStatus)
async def stop(service: PowServiceDep) -> PowStatus:
    """Stop the PoW job and free the model."""
    await service.stop()
    return service.pow_status()
