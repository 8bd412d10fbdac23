"""What the inference engines expose to other packages: their endpoints and one HTTP client.

infer starts and watches the engines; pow fans PoC v2 out to them. Neither imports the other:
api hands infer's service to pow as a `ServingEngines` (`build_services`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import httpx

from mlnode.common.errors import Unavailable


class EngineEndpoint(Protocol):
    """One serving engine instance on loopback."""

    @property
    def key(self) -> str:
        """Identity of the instance (changes when it restarts)."""
        ...

    @property
    def port(self) -> int:
        """Loopback port of the instance."""
        ...

    @property
    def url(self) -> str:
        """Base URL of the instance."""
        ...


class ServingEngines(Protocol):
    """The engine instances that serve now, and the client to call them with."""

    def serving_engines(self) -> Sequence[EngineEndpoint]:
        """The healthy instances now (an immutable snapshot)."""
        ...

    def engine_client(self) -> httpx.AsyncClient:
        """The open client for engine calls; `Unavailable` when closed."""
        ...


class NoEngines:
    """A node without an inference service: nothing serves."""

    def serving_engines(self) -> Sequence[EngineEndpoint]:
        """Always empty."""
        return ()

    def engine_client(self) -> httpx.AsyncClient:
        """There is none."""
        raise Unavailable("this node runs no inference service")
