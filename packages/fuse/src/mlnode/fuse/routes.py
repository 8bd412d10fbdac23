"""Routes of mlnode-fuse, mounted by mlnode-api under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, status

from mlnode.fuse.deps import FuseServiceDep
from mlnode.fuse.schemas import FuseJobStatus, FuseRequest, ShareRequest, ShareStatus

router = APIRouter(prefix="/fuse", tags=["fuse"])


@router.post("/start", operation_id="fuse_start", status_code=status.HTTP_202_ACCEPTED)
async def start(request: FuseRequest, service: FuseServiceDep) -> FuseJobStatus:
    """Check the request and the models, then fuse in the background."""
    return await service.start_job(request)


@router.get("/status", operation_id="fuse_status")
async def get_status(service: FuseServiceDep) -> FuseJobStatus:
    """Tensors and bytes done, rate, and the error of a failed fusion."""
    return service.job_status()


@router.post("/stop", operation_id="fuse_stop")
async def stop(service: FuseServiceDep) -> FuseJobStatus:
    """Stop the fusion; nothing is left at the output path."""
    return await service.stop_job()


@router.post("/share", operation_id="fuse_share")
async def share(request: ShareRequest, service: FuseServiceDep) -> ShareStatus:
    """Let the known peers of a task pull a local model."""
    return await service.share(request)


@router.delete("/share/{task_id}", operation_id="fuse_unshare")
async def unshare(task_id: str, service: FuseServiceDep) -> ShareStatus:
    """Stop sharing the task's model."""
    return await service.unshare(task_id)


@router.get("/shares", operation_id="fuse_shares")
async def shares(service: FuseServiceDep) -> list[ShareStatus]:
    """Models this node shares."""
    return service.shares()
