"""FastAPI dependencies that resolve the node's PowService and its PoC v2 fan-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.common.deps import resolve_service
from mlnode.pow.fanout.fanout import PocFanout
from mlnode.pow.v1.service import PowService


def get_pow_service(request: Request) -> PowService:
    """The node's PowService."""
    return resolve_service(request, PowService)


PowServiceDep = Annotated[PowService, Depends(get_pow_service)]


def get_poc_fanout(request: Request) -> PocFanout:
    """The PoC v2 fan-out over the node's serving engines."""
    return resolve_service(request, PowService).poc


PocFanoutDep = Annotated[PocFanout, Depends(get_poc_fanout)]
