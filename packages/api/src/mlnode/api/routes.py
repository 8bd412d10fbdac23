"""Node routes: state, stop, health probes, capabilities, metrics."""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlnode.api.deps import ContextDep, NodeStateDep
from mlnode.api.schemas import (
    Capabilities,
    HealthResponse,
    NodeStateResponse,
    StopResponse,
    VersionsResponse,
)
from mlnode.api.versions import engine_versions, inference_service, node_version, poc_fanout
from mlnode.common.hardware import discover_hardware
from mlnode.common.nvml import GpuDevices, GpuDriver, read_devices, read_driver

api_router = APIRouter(prefix="/api/v1", tags=["node"])
probe_router = APIRouter(tags=["probes"])


@api_router.get("/state", operation_id="get_state")
async def get_state(node: NodeStateDep) -> NodeStateResponse:
    """Which service holds the GPU, the versions and the served model."""
    infer = inference_service(node.gate)
    engine = await engine_versions(poc_fanout(node.gate))
    return NodeStateResponse(
        state=node.state(),
        version=node_version(),
        poc_validation_inference=engine.poc_validation_inference if engine else False,
        loaded_model=infer.loaded_model() if infer else None,
        services=[s.status() for s in node.gate.services],
    )


@api_router.get("/versions", operation_id="get_versions")
async def get_versions(node: NodeStateDep) -> VersionsResponse:
    """MLNode version, the engine's vLLM version, PoC validation inference."""
    engine = await engine_versions(poc_fanout(node.gate))
    return VersionsResponse(
        version=node_version(),
        vllm_version=engine.vllm_version if engine else None,
        poc_validation_inference=engine.poc_validation_inference if engine else False,
    )


@api_router.get("/gpu/devices", operation_id="gpu_devices")
async def gpu_devices() -> GpuDevices:
    """NVIDIA devices through NVML; `count: 0` without a driver."""
    return await asyncio.to_thread(read_devices)


@api_router.get(
    "/gpu/driver", operation_id="gpu_driver", responses={503: {"description": "No NVIDIA driver."}}
)
async def gpu_driver() -> GpuDriver:
    """Driver, CUDA and NVML versions; 503 without an NVIDIA driver."""
    return await asyncio.to_thread(read_driver)


@api_router.post("/stop", operation_id="stop_all")
async def stop_all(node: NodeStateDep) -> StopResponse:
    """Stop whatever runs."""
    await node.stop_all()
    return StopResponse(status="OK")


@api_router.get(
    "/clock",
    operation_id="clock",
    status_code=204,
    response_class=Response,
    responses={
        204: {
            "description": "X-Server-Recv-Ns / X-Server-Send-Ns: unix nanoseconds when the "
            "request arrived and when the answer left. Open without a token."
        }
    },
)
async def clock() -> Response:
    """The node's clock, for the network node's ping job (round trip and offset)."""
    received = time.time_ns()
    headers = {"X-Server-Recv-Ns": str(received), "X-Server-Send-Ns": str(time.time_ns())}
    return Response(status_code=204, headers=headers)


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
