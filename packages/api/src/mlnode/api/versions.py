"""What the node reports of its versions: its own, the engine's, and PoC validation inference."""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version

from mlnode.common.errors import MLNodeError
from mlnode.common.lifecycle import ServiceGate
from mlnode.infer.service import InferService
from mlnode.pow.fanout.fanout import PocFanout
from mlnode.pow.poc.schemas import PocVersions
from mlnode.pow.v1.service import PowService

log = logging.getLogger(__name__)

#: The state route is polled with a 5 s deadline: the engine gets a part of it, once.
ENGINE_VERSIONS_TIMEOUT_S = 2.0


def node_version() -> str:
    """This MLNode's version (the network node stores it as the node's version)."""
    return version("mlnode-api")


def inference_service(gate: ServiceGate) -> InferService | None:
    """The node's inference service, if it has one."""
    return next((s for s in gate.services if isinstance(s, InferService)), None)


def poc_fanout(gate: ServiceGate) -> PocFanout | None:
    """The node's PoC v2 fan-out (held by its PoW service), if it has one."""
    pow_service = next((s for s in gate.services if isinstance(s, PowService)), None)
    return pow_service.poc if pow_service is not None else None


async def engine_versions(poc: PocFanout | None) -> PocVersions | None:
    """The serving engine's versions (cached by the fan-out); None when no engine answers."""
    if poc is None or not poc.backends():
        return None
    cached = poc.cached_versions()
    if cached is not None:
        return cached
    try:
        return await asyncio.wait_for(poc.versions(), ENGINE_VERSIONS_TIMEOUT_S)
    except (MLNodeError, TimeoutError) as exc:
        log.warning("engine versions unavailable: %s", exc)
        return None
