"""Dependencies of the fusion routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.common.deps import resolve_service
from mlnode.fuse.service import FuseService


def get_fuse_service(request: Request) -> FuseService:
    """The node's fusion service."""
    return resolve_service(request, FuseService)


FuseServiceDep = Annotated[FuseService, Depends(get_fuse_service)]
