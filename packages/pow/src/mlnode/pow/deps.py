"""FastAPI dependency that resolves the node's PowService."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.common.deps import resolve_service
from mlnode.pow.service import PowService


def get_pow_service(request: Request) -> PowService:
    """The node's PowService."""
    return resolve_service(request, PowService)


PowServiceDep = Annotated[PowService, Depends(get_pow_service)]
