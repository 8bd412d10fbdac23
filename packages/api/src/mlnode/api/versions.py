"""What the node reports of its versions: its own, the engine's, and PoC validation inference."""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version

from mlnode.common.errors import MLNodeError
from mlnode.common.lifecycle import ServiceGate
from mlnode.infer.poc_schemas import PocVersions
from mlnode.infer.service import InferService

log = logging.getLogger(__name__)

#: The state route is polled with a 5 s deadline: the engine gets a part of it, once.
ENGINE_VERSIONS_TIMEOUT_S = 2.0


def node_version() -> str:
    """This MLNode's version (the network node stores it as the node's version)."""
    return version("mlnode-api")


def inference_service(gate: ServiceGate) -> InferService | None:
    """The node's inference service, if it has one."""
    return next((s for s in gate.services if isinstance(s, InferService)), None)


async def engine_versions(infer: InferService | None) -> PocVersions | None:
    """The serving engine's versions (cached by the fan-out); None when no engine answers."""
    if infer is None or not infer.poc.backends():
        return None
    cached = infer.poc.cached_versions()
    if cached is not None:
        return cached
    try:
        return await asyncio.wait_for(infer.poc.versions(), ENGINE_VERSIONS_TIMEOUT_S)
    except (MLNodeError, TimeoutError) as exc:
        log.warning("engine versions unavailable: %s", exc)
        return None
