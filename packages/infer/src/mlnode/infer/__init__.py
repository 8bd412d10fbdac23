"""vLLM engine lifecycle and the OpenAI-compatible proxy.

The names below are the package's surface: what the api composes (`router`, `InferService`,
`InferSettings`, the one-port `EngineAsgi`) and what it reads of the running engines (their
`Backend`s, `EngineArgs`, the status schemas). Other packages import these from `mlnode.infer`,
not from its modules.

They load on first use: vLLM imports this package in every engine process for the forcing
plugin, which must not bring the node's service, FastAPI and the proxy in with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlnode.infer.args import EngineArgs, flag_value
    from mlnode.infer.asgi_relay import EngineAsgi
    from mlnode.infer.balancer import Backend
    from mlnode.infer.routes import router
    from mlnode.infer.schemas import InferServiceStatus, UpPhase
    from mlnode.infer.service import InferService
    from mlnode.infer.settings import InferSettings

__all__ = [
    "Backend",
    "EngineArgs",
    "EngineAsgi",
    "InferService",
    "InferServiceStatus",
    "InferSettings",
    "UpPhase",
    "flag_value",
    "router",
]

_HOMES = {
    "Backend": "balancer",
    "EngineArgs": "args",
    "EngineAsgi": "asgi_relay",
    "InferService": "service",
    "InferServiceStatus": "schemas",
    "InferSettings": "settings",
    "UpPhase": "schemas",
    "flag_value": "args",
    "router": "routes",
}


if not TYPE_CHECKING:
    # Hidden from mypy, which then checks each imported name against the imports above.

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{__name__}.{home}"), name)
