"""FastAPI dependency that reaches the node's `TrainService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.common.deps import resolve_service
from mlnode.train.service import TrainService


def get_train_service(request: Request) -> TrainService:
    """The node's training service."""
    return resolve_service(request, TrainService)


TrainServiceDep = Annotated[TrainService, Depends(get_train_service)]
