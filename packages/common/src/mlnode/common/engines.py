"""What the inference engines expose to other packages: their endpoints and one HTTP client.

infer starts and watches the engines; pow fans PoC v2 out to them. Neither imports the other:
api hands infer's service to pow as a `ServingEngines` (`build_services`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from mlnode.common.errors import EngineFailed, Unavailable


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


@dataclass(frozen=True)
class EngineAnswer:
    """An engine's whole answer: status and body (read within the call's size bound)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        """The body as JSON; `ValueError` when it is not."""
        return json.loads(self.content)

    def json_or_none(self) -> Any:
        """The body as JSON, or None when it is not."""
        try:
            return self.json()
        except ValueError:
            return None


class EngineClient:
    """The node's one HTTP client to its local engines (one connection pool).

    Every call has a deadline for the whole call (connect, send, the answer read in full), not
    per read, and a bound on the answer's size; any failure is an `EngineFailed` naming the
    engine. The inference proxy's relay is not a caller: it streams with its own limits.
    """

    def __init__(
        self,
        timeout_s: float = 30.0,
        max_answer_bytes: int = 8 << 20,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=16)
        # trust_env off: a proxy in the environment must not see loopback engine calls.
        self._client = httpx.AsyncClient(
            limits=limits, timeout=None, transport=transport, trust_env=False
        )

    async def request(
        self,
        engine: EngineEndpoint,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeout_s: float | None = None,
        max_bytes: int | None = None,
    ) -> EngineAnswer:
        """`method {engine.url}{path}`, the answer read whole; `EngineFailed` on any failure."""
        deadline = self.timeout_s if timeout_s is None else timeout_s
        limit = self.max_answer_bytes if max_bytes is None else max_bytes
        what = f"engine {engine.key} (port {engine.port}): {method} {path}"
        try:
            async with asyncio.timeout(deadline):
                return await self._exchange(engine, method, path, json_body, limit, what)
        except TimeoutError:
            raise EngineFailed(f"{what}: no whole answer within {deadline:g} s") from None
        except httpx.HTTPError as exc:
            raise EngineFailed(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def _exchange(
        self, engine: EngineEndpoint, method: str, path: str, body: Any, limit: int, what: str
    ) -> EngineAnswer:
        request = self._client.build_request(method, f"{engine.url}{path}", json=body)
        response = await self._client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise EngineFailed(f"{what}: answer of {declared} bytes, over {limit}")
            data = bytearray()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > limit:
                    raise EngineFailed(f"{what}: answer over {limit} bytes")
        finally:
            await response.aclose()
        return EngineAnswer(response.status_code, bytes(data))

    async def get(
        self,
        engine: EngineEndpoint,
        path: str,
        timeout_s: float | None = None,
        max_bytes: int | None = None,
    ) -> EngineAnswer:
        """GET `path` (see `request`)."""
        return await self.request(engine, "GET", path, timeout_s=timeout_s, max_bytes=max_bytes)

    async def post(
        self,
        engine: EngineEndpoint,
        path: str,
        body: Any,
        timeout_s: float | None = None,
        max_bytes: int | None = None,
    ) -> EngineAnswer:
        """POST `body` as JSON to `path` (see `request`)."""
        return await self.request(
            engine, "POST", path, json_body=body, timeout_s=timeout_s, max_bytes=max_bytes
        )

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()


class ServingEngines(Protocol):
    """The engine instances that serve now, and the client to call them with."""

    def serving_engines(self) -> Sequence[EngineEndpoint]:
        """The healthy instances now (an immutable snapshot)."""
        ...

    def engine_client(self) -> EngineClient:
        """The open client for engine calls; `Unavailable` when closed."""
        ...


class NoEngines:
    """A node without an inference service: nothing serves."""

    def serving_engines(self) -> Sequence[EngineEndpoint]:
        """Always empty."""
        return ()

    def engine_client(self) -> EngineClient:
        """There is none."""
        raise Unavailable("this node runs no inference service")
