"""Node routes: state, stop, health probes, capabilities, metrics."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlnode.api.deps import ContextDep, NodeStateDep
from mlnode.api.schemas import Capabilities, HealthResponse, NodeStateResponse, StopResponse
from mlnode.common.hardware import discover_hardware

api_router = APIRouter(prefix="/api/v1", tags=["node"])
probe_router = APIRouter(tags=["probes"])


@api_router.get("/state", operation_id="get_state")
async def get_state(node: NodeStateDep) -> NodeStateResponse:
    """Which service holds the GPU."""
    return NodeStateResponse(state=node.state(), services=[s.status() for s in node.gate.services])


@api_router.post("/stop", operation_id="stop_all")
async def stop_all(node: NodeStateDep) -> StopResponse:
    """Stop whatever runs."""
    await node.stop_all()
    return StopResponse(status="OK")


@api_router.get("/capabilities", operation_id="get_capabilities")
async def get_capabilities(node: NodeStateDep, ctx: ContextDep) -> Capabilities:
    """GPUs, CPU cores, memory, disk and the running service."""
    hardware = await asyncio.to_thread(discover_hardware, ctx.settings.state_dir)
    return Capabilities(**hardware.model_dump(), state=node.state(), version=version("mlnode-api"))


@probe_router.get("/livez", operation_id="livez")
async def livez() -> HealthResponse:
    """The process answers."""
    return HealthResponse(status="ok")


@probe_router.get("/readyz", operation_id="readyz", responses={503: {"model": HealthResponse}})
async def readyz(node: NodeStateDep) -> Response:
    """503 while a service is unhealthy."""
    problems = node.problems()
    body = HealthResponse(status="unavailable" if problems else "ok", problems=problems)
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


@probe_router.get("/health", operation_id="health", responses={503: {"model": HealthResponse}})
async def health(node: NodeStateDep) -> Response:
    """Same answer as /readyz, under the name the network node polls."""
    return await readyz(node)


@probe_router.get("/metrics", operation_id="metrics", response_class=Response)
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(ctx.metrics), media_type=CONTENT_TYPE_LATEST)
