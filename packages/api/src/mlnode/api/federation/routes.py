"""`GET /api/v1/metrics`: schema v1 for the network node's federation (404 when off)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlnode.api.federation.exporter import Exporter
from mlnode.common.errors import NotFound


def get_exporter(request: Request) -> Exporter:
    """The app's exporter."""
    exporter: Exporter = request.app.state.exporter
    return exporter


router = APIRouter(tags=["probes"])


@router.get(
    "/metrics",
    operation_id="federated_metrics",
    response_class=Response,
    responses={404: {"description": "Export is off (MLNODE_METRICS_EXPORT / GONKA_METRICS)."}},
)
async def federated_metrics(exporter: Annotated[Exporter, Depends(get_exporter)]) -> Response:
    """Prometheus text of gonka's MLNode metrics schema v1, from cached readings."""
    if not exporter.settings.enabled:
        raise NotFound("metrics export is off")
    body = await asyncio.to_thread(generate_latest, exporter.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
