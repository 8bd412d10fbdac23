"""Builds every package's service for one node."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlnode.api.settings import MLNodeSettings
from mlnode.common.context import NodeContext
from mlnode.common.lifecycle import Service
from mlnode.fuse.routes import router as fuse_router
from mlnode.fuse.service import FuseService
from mlnode.infer.routes import router as infer_router
from mlnode.infer.service import InferService
from mlnode.pow.fanout.fanout import PocFanout
from mlnode.pow.fanout.routes import router as poc_router
from mlnode.pow.v1.routes import router as pow_router
from mlnode.pow.v1.service import PowService
from mlnode.train.routes import router as train_router
from mlnode.train.service import TrainService

FEATURE_ROUTERS: tuple[APIRouter, ...] = (
    pow_router,
    infer_router,
    poc_router,
    train_router,
    fuse_router,
)


def build_services(settings: MLNodeSettings, ctx: NodeContext) -> list[Service[Any]]:
    """Create each feature package's service; `create_app` registers them with `ctx.gate`."""
    infer = InferService(settings.infer, ctx)
    poc = PocFanout(
        infer, settings.infer.poc_request_timeout_s, settings.infer.poc_generate_timeout_s
    )
    return [
        PowService(settings.pow, ctx, poc),
        FuseService(settings.fuse, ctx),
        infer,
        TrainService(settings.train, ctx),
    ]
