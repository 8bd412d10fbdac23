"""ASGI middleware: token, JSON without Content-Type, version prefix, one-port engine routes."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from mlnode.common.errors import Unauthorized
from mlnode.common.urlprefix import VersionPrefix
from mlnode.infer import EngineAsgi

#: Paths that tell nothing but that the process runs, or the time (the ping job sends no token).
OPEN_PATHS = frozenset({"/livez", "/api/v1/clock"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
GENERIC_TYPES = frozenset(
    {b"", b"text/plain", b"application/x-www-form-urlencoded", b"application/octet-stream"}
)


class BearerTokenMiddleware:
    """Require `Authorization: Bearer <token>` on every path but `OPEN_PATHS`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse HTTP requests without the token."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps(Unauthorized("missing or wrong bearer token").to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class DefaultJsonContentType:
    """Read bodies as JSON whatever generic type they claim.

    The network node's Go client sends none and curl's `-d` says form-urlencoded; no route of the
    node takes form or binary bodies.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set `content-type: application/json` where a body request has none or a generic one."""
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = scope["headers"]
            given = next((value for name, value in headers if name == b"content-type"), b"")
            if given.split(b";")[0].strip().lower() in GENERIC_TYPES:
                kept = [(name, value) for name, value in headers if name != b"content-type"]
                scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class StripVersionPrefix:
    """Route `/{version}/...` as `/...` (the newest network node's URLs, without an nginx)."""

    def __init__(self, app: ASGIApp, prefix: VersionPrefix) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite `path` and `raw_path` when the first segment is a version."""
        if scope["type"] == "http":
            path = self.prefix.strip_path(scope["path"])
            if path != scope["path"]:
                raw = scope.get("raw_path")
                # raw_path keeps its percent-escapes (a one-port request goes on with it).
                raw = self.prefix.strip_target(raw) if raw else path.encode()
                scope = {**scope, "path": path, "raw_path": raw}
        await self.app(scope, receive, send)


class EngineRoutes:
    """One-port mode: the engine's API paths (`/v1/*`, `/tokenize`, ...) go to the proxy core."""

    def __init__(self, app: ASGIApp, engine: EngineAsgi) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand engine paths to the inference relay, everything else to the REST app."""
        if scope["type"] == "http" and self.engine.relays(scope["path"]):
            await self.engine(scope, receive, send)
            return
        await self.app(scope, receive, send)
