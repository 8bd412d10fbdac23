"""Dependency that routes use to reach the inference service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.common.deps import resolve_service
from mlnode.infer.service import InferService


def get_infer_service(request: Request) -> InferService:
    """The node's inference service."""
    return resolve_service(request, InferService)


InferServiceDep = Annotated[InferService, Depends(get_infer_service)]
