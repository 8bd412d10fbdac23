"""Routes of mlnode-train, mounted by mlnode-api under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/train", tags=["train"])
