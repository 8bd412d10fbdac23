"""What the inference port does with a request target before the proxy forwards it.

The network node's `/{version}` prefix is stripped; `/health` and `/livez` are answered here and
stay open; with an API token every other path needs `Authorization: Bearer <token>`; paths of
the engine's HTTP API an operator expects (`/v1/*`, `/tokenize`, `/detokenize`, ...) are relayed,
anything else is 404. The proxy and the REST port's one-port mode share this one object.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from enum import Enum

from mlnode.common.urlprefix import VersionPrefix

DEFAULT_RELAYED = (
    "/v1/",
    "/v2/",
    "/tokenize",
    "/detokenize",
    "/version",
    "/pooling",
    "/classify",
    "/score",
    "/rerank",
    "/invocations",
    "/ping",
)
OPEN_PATHS = frozenset({b"/health", b"/livez"})


class Route(Enum):
    """Where one request goes."""

    HEALTH = "health"
    LIVEZ = "livez"
    ENGINE = "engine"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"


class InferenceRoutes:
    """Prefix stripping, the open paths, the token check and the relayed paths."""

    __slots__ = ("_exact", "_expected", "_prefix", "_prefixes")

    def __init__(
        self,
        prefix: VersionPrefix | None = None,
        relayed: Sequence[str] = DEFAULT_RELAYED,
        token: str | None = None,
    ) -> None:
        self._prefix = prefix or VersionPrefix()
        paths = [p.encode() for p in relayed]
        self._exact = frozenset(p for p in paths if not p.endswith(b"/"))
        self._prefixes = tuple(p if p.endswith(b"/") else p + b"/" for p in paths)
        self._expected = f"Bearer {token}".encode() if token else None

    def target(self, target: bytes) -> bytes:
        """The request target without the version prefix."""
        return self._prefix.strip_target(target)

    def relays(self, path: bytes) -> bool:
        """True for a path of the engine's API (path without the query)."""
        return path.startswith(self._prefixes) or path in self._exact

    def route(self, path: bytes, authorization: bytes | None) -> Route:
        """Decide for one (already stripped) path."""
        if path in OPEN_PATHS:
            return Route.HEALTH if path == b"/health" else Route.LIVEZ
        if self._expected is not None and not hmac.compare_digest(
            authorization or b"", self._expected
        ):
            return Route.UNAUTHORIZED
        return Route.ENGINE if self.relays(path) else Route.NOT_FOUND
