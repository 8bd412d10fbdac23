"""Routes of mlnode-train, mounted by mlnode-api under /api/v1."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from mlnode.train.deps import TrainServiceDep
from mlnode.train.legacy import LegacyTrainBody
from mlnode.train.schemas import TrainRequest, TrainStatus

router = APIRouter(prefix="/train", tags=["train"])

StartBody = Annotated[
    TrainRequest | LegacyTrainBody,
    Body(description="The typed body, or the network node's {train_config, train_env}."),
]


@router.post("/start", operation_id="train_start")
async def start(body: StartBody, service: TrainServiceDep) -> TrainStatus:
    """Start this worker of a DiLoCo task; 422 for bad input, 409 while another service runs."""
    status = await service.start_body(body)
    return TrainStatus(**status.model_dump())


@router.get("/status", operation_id="train_status")
async def status(service: TrainServiceDep) -> TrainStatus:
    """Inner step, outer round, losses, tokens/s, bytes, peers alive, weight hash, last error."""
    return TrainStatus(**service.status().model_dump())


@router.post("/stop", operation_id="train_stop")
async def stop(service: TrainServiceDep) -> TrainStatus:
    """Stop training; the last checkpoint stays for a later start to resume from."""
    await service.stop()
    return TrainStatus(**service.status().model_dump())
