"""`create_app`: the one FastAPI app of an MLNode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI

from mlnode.api.errors import install_error_handlers
from mlnode.api.federation.exporter import Exporter
from mlnode.api.federation.hardware import HostReader
from mlnode.api.federation.routes import router as federation_router
from mlnode.api.federation.serving import serving_config
from mlnode.api.limits import BodyLimit
from mlnode.api.metrics import register_node_metrics
from mlnode.api.middleware import (
    BearerTokenMiddleware,
    DefaultJsonContentType,
    EngineRoutes,
    StripVersionPrefix,
)
from mlnode.api.models.downloads import ModelManager
from mlnode.api.models.routes import router as models_router
from mlnode.api.node import NodeState
from mlnode.api.routes import api_router, probe_router
from mlnode.api.services import FEATURE_ROUTERS, build_services
from mlnode.api.settings import MLNodeSettings
from mlnode.api.versions import inference_service, node_version
from mlnode.common.context import NodeContext
from mlnode.common.engines import NoEngines
from mlnode.common.lifecycle import Service
from mlnode.common.transport.api import TensorTransport
from mlnode.common.transport.routes import router as transport_router
from mlnode.common.transport.transport import GrpcTransport
from mlnode.common.urlprefix import VersionPrefix

#: Builds the node's services from its settings and shared objects (tests pass their own).
ServiceFactory = Callable[[MLNodeSettings, NodeContext], Sequence[Service[Any]]]


def create_app(
    settings: MLNodeSettings | None = None,
    services: ServiceFactory | None = None,
    transport: TensorTransport | None = None,
) -> FastAPI:
    """Build the app; tests may replace the service factory and the services' transport.

    The node's gRPC transport is started and stopped with the server either way; a `transport`
    given here is what the services use instead (an in-memory fake).
    """
    settings = settings or MLNodeSettings.load()
    grpc_transport = GrpcTransport(settings.transport, settings.node.state_dir)
    ctx = NodeContext(settings=settings.node, transport=transport or grpc_transport)
    for service in (services or build_services)(settings, ctx):
        ctx.gate.register(service)
    node = NodeState(ctx.gate, stop_timeout_s=settings.node.shutdown_timeout_s)
    register_node_metrics(ctx.metrics, node)
    models = ModelManager(settings.models)
    infer = inference_service(ctx.gate)
    exporter = Exporter(
        settings.metrics,
        node_version(),
        engines=infer if infer is not None else NoEngines(),
        serving=lambda: serving_config(infer),
        host=HostReader(settings.models.cache_dir),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings.node.ensure_state_dir()
        await asyncio.to_thread(grpc_transport.start)
        try:
            await node.open()
            await exporter.open()
            try:
                yield
            finally:
                await exporter.close()
                await models.close()
                await node.close()
        finally:
            await asyncio.to_thread(grpc_transport.stop)

    app = FastAPI(
        title="MLNode",
        version=version("mlnode-api"),
        description="Private REST API of an MLNode, driven by its network node.",
        lifespan=lifespan,
    )
    app.state.context = ctx
    app.state.gate = ctx.gate
    app.state.node = node
    app.state.models = models
    app.state.exporter = exporter
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(probe_router)
    app.include_router(transport_router, prefix="/api/v1")
    app.include_router(models_router, prefix="/api/v1")
    app.include_router(federation_router, prefix="/api/v1")
    for router in FEATURE_ROUTERS:
        app.include_router(router, prefix="/api/v1")
    if infer is not None and settings.infer.serve_on_rest_port:
        app.add_middleware(EngineRoutes, engine=infer.engine_asgi)
    app.add_middleware(DefaultJsonContentType)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.node.max_body_bytes,
        max_json_values=settings.node.max_json_values,
        exempt=infer.engine_asgi.relays if infer is not None else None,
    )
    if settings.node.api_token is not None:
        app.add_middleware(BearerTokenMiddleware, token=settings.node.api_token.get_secret_value())
    app.add_middleware(
        StripVersionPrefix, prefix=VersionPrefix(settings.node.version_prefix_pattern)
    )
    return app
