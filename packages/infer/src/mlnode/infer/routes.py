"""Routes of mlnode-infer, mounted by mlnode-api under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/inference", tags=["inference"])
