"""PoC v2 fan-out: the network node's `/api/v1/inference/pow/*` over every engine instance.

The proof is computed inside each engine (`/api/v1/pow/*` on its loopback port). Mining goes to
every healthy instance, sorted by port, instance i getting `group_id=i, n_groups=n`, so their
nonce shares are disjoint; a `/generate` goes to one instance, and a queued request's id names
the instance (`"{port}:{uuid}"`) so the result is fetched from it again. The node stays
INFERENCE throughout. Engine-agnostic: any engine serving those routes works.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from mlnode.common.engines import EngineAnswer, EngineEndpoint, ServingEngines
from mlnode.common.errors import BadRequest, EngineFailed, NotFound, Unavailable
from mlnode.pow.fanout.schemas import (
    BackendError,
    BackendResult,
    PocBackendStatus,
    PocInitResponse,
    PocStatusResponse,
    PocStopResponse,
)
from mlnode.pow.poc.schemas import PocGenerateBody, PocInitGenerateBody, PocVersions

ENGINE_PREFIX = "/api/v1/pow"
NO_BACKENDS = "NO_BACKENDS"
MIXED = "MIXED"
GENERATING = "GENERATING"
IDLE = "IDLE"
UNREACHABLE = "UNREACHABLE"
_ERROR_TEXT = 300
#: Largest engine answer read (a `/generate` result holds every nonce's artifact).
MAX_ANSWER_BYTES = 1 << 30

JsonAnswer = tuple[int, dict[str, Any]]


class AllBackendsFailed(EngineFailed):
    """Every engine instance refused or failed; the body lists each one's error."""

    def __init__(self, what: str, errors: list[BackendError]) -> None:
        super().__init__(f"{what} failed on every engine instance")
        self.errors = errors

    def to_body(self) -> dict[str, Any]:
        """The error shape plus `errors`, one per instance."""
        return {**super().to_body(), "errors": [e.model_dump() for e in self.errors]}


def _describe(response: EngineAnswer) -> str:
    return f"HTTP {response.status_code}: {response.content[:_ERROR_TEXT].decode(errors='replace')}"


def _json_body(response: EngineAnswer) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else {"result": body}


class PocFanout:
    """Fans the PoC v2 calls out to the engine instances that serve now."""

    def __init__(
        self,
        engines: ServingEngines,
        timeout_s: float = 30.0,
        generate_timeout_s: float = 600.0,
    ) -> None:
        self._engines = engines
        self.timeout_s = timeout_s
        self.generate_timeout_s = generate_timeout_s
        self._turn = itertools.count()
        self._versions: tuple[tuple[str, ...], PocVersions] | None = None

    def backends(self) -> list[EngineEndpoint]:
        """Healthy instances in port order (the group order of the nonce shares)."""
        return sorted(self._engines.serving_engines(), key=lambda b: b.port)

    async def _call(
        self,
        backend: EngineEndpoint,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 0.0,
    ) -> EngineAnswer:
        return await self._engines.engine_client().request(
            backend,
            method,
            f"{ENGINE_PREFIX}{path}",
            json_body=body,
            timeout_s=timeout or self.timeout_s,
            max_bytes=MAX_ANSWER_BYTES,
        )

    async def _fan(
        self, backends: Sequence[EngineEndpoint], method: str, path: str, bodies: Sequence[Any]
    ) -> list[EngineAnswer | BaseException]:
        calls = (
            self._call(b, method, path, body) for b, body in zip(backends, bodies, strict=True)
        )
        return await asyncio.gather(*calls, return_exceptions=True)

    async def init_generate(self, request: PocInitGenerateBody) -> PocInitResponse:
        """Start mining on every healthy instance with its nonce group."""
        backends = self.backends()
        if not backends:
            raise Unavailable("no healthy inference engine to run PoC on; start inference first")
        n = len(backends)
        bodies = init_bodies(request, n)
        answers = await self._fan(backends, "POST", "/init/generate", bodies)
        results, errors = _split(backends, answers, "OK")
        if not results:
            raise AllBackendsFailed("PoC init/generate", errors)
        return PocInitResponse(
            backends=len(results), n_groups=n, results=results, errors=errors or None
        )

    async def stop(self) -> PocStopResponse:
        """Stop PoC on every healthy instance."""
        backends = self.backends()
        if not backends:
            return PocStopResponse(message="No backends to stop")
        answers = await self._fan(backends, "POST", "/stop", [{}] * len(backends))
        results, errors = _split(backends, answers, "stopped")
        return PocStopResponse(results=results, errors=errors or None)

    async def status(self) -> PocStatusResponse:
        """The instances' states combined by `aggregate_status`; NO_BACKENDS without any."""
        backends = self.backends()
        if not backends:
            return PocStatusResponse(status=NO_BACKENDS, backends=[])
        answers = await self._fan(backends, "GET", "/status", [None] * len(backends))
        detail = [_backend_status(b, a) for b, a in zip(backends, answers, strict=True)]
        return PocStatusResponse(
            status=aggregate_status([d.status for d in detail]), backends=detail
        )

    async def generate(self, request: PocGenerateBody) -> JsonAnswer:
        """Forward to one instance (round robin); a queued id comes back as `port:uuid`."""
        backends = self.backends()
        if not backends:
            raise Unavailable("no healthy inference engine to run PoC on; start inference first")
        backend = backends[next(self._turn) % len(backends)]
        body = request.model_dump(mode="json", exclude_unset=True)
        response = await self._call(
            backend, "POST", "/generate", body, timeout=self.generate_timeout_s
        )
        return _tagged(backend, response)

    async def generate_result(self, request_id: str) -> JsonAnswer:
        """Fetch a queued request's state from the instance its id names."""
        port_text, sep, uuid = request_id.partition(":")
        if not sep or not port_text.isdigit() or not uuid:
            raise BadRequest(
                f"request_id {request_id!r} is not '<port>:<id>' as /generate returned it",
                param="request_id",
            )
        backend = next((b for b in self.backends() if b.port == int(port_text)), None)
        if backend is None:
            raise NotFound(f"no serving engine instance on port {port_text}", param="request_id")
        response = await self._call(backend, "GET", f"/generate/{uuid}")
        return _tagged(backend, response)

    async def versions(self) -> PocVersions:
        """The first healthy instance's `/api/v1/pow/versions`, cached per set of instances."""
        backends = self.backends()
        if not backends:
            raise Unavailable("no inference engine is serving")
        keys = tuple(b.key for b in backends)
        if self._versions is not None and self._versions[0] == keys:
            return self._versions[1]
        versions = await self._fetch_versions(backends[0])
        self._versions = (keys, versions)
        return versions

    async def _fetch_versions(self, backend: EngineEndpoint) -> PocVersions:
        try:
            response = await self._call(backend, "GET", "/versions")
            if response.status_code == 200:
                return PocVersions.model_validate(response.json())
            # An engine without PoC routes: its version, and no inference during validation.
            plain = await self._engines.engine_client().get(
                backend, "/version", timeout_s=self.timeout_s
            )
            version = plain.json().get("version") if plain.status_code == 200 else None
        except (ValueError, AttributeError) as exc:
            raise EngineFailed(f"engine on port {backend.port}: {exc!r}") from exc
        return PocVersions(vllm_version=version, poc_validation_inference=False)

    def cached_versions(self) -> PocVersions | None:
        """What `versions()` found for the instances serving now, without asking them."""
        keys = tuple(b.key for b in self.backends())
        if self._versions is not None and self._versions[0] == keys:
            return self._versions[1]
        return None


def aggregate_status(states: Sequence[str]) -> str:
    """Gonka's rule across instances: GENERATING only if all generate, MIXED if any does.

    IDLE if all are idle, MIXED otherwise (all VALIDATING or all UNREACHABLE included).
    """
    if not states:
        return NO_BACKENDS
    if all(s == GENERATING for s in states):
        return GENERATING
    if all(s == IDLE for s in states):
        return IDLE
    return MIXED


def init_bodies(request: PocInitGenerateBody, n_groups: int) -> list[dict[str, Any]]:
    """One `/init/generate` body per engine: the caller's fields (no batch_size unless sent)."""
    base = request.model_dump(mode="json", exclude_unset=True)
    return [{**base, "group_id": i, "n_groups": n_groups} for i in range(n_groups)]


def _split(
    backends: Sequence[EngineEndpoint], answers: Sequence[EngineAnswer | BaseException], ok: str
) -> tuple[list[BackendResult], list[BackendError]]:
    results: list[BackendResult] = []
    errors: list[BackendError] = []
    for backend, answer in zip(backends, answers, strict=True):
        if isinstance(answer, EngineAnswer) and answer.status_code < 400:
            results.append(BackendResult(port=backend.port, status=ok))
        elif isinstance(answer, EngineAnswer):
            errors.append(BackendError(port=backend.port, error=_describe(answer)))
        else:
            errors.append(BackendError(port=backend.port, error=repr(answer)))
    return results, errors


def _backend_status(
    backend: EngineEndpoint, answer: EngineAnswer | BaseException
) -> PocBackendStatus:
    if isinstance(answer, BaseException):
        return PocBackendStatus(port=backend.port, status=UNREACHABLE, error=repr(answer))
    body = _json_body(answer)
    if answer.status_code != 200 or body is None or not isinstance(body.get("status"), str):
        return PocBackendStatus(port=backend.port, status=UNREACHABLE, error=_describe(answer))
    try:
        return PocBackendStatus.model_validate({**body, "port": backend.port})
    except ValidationError as exc:
        return PocBackendStatus(port=backend.port, status=UNREACHABLE, error=f"bad status: {exc}")


def _tagged(backend: EngineEndpoint, response: EngineAnswer) -> JsonAnswer:
    body = _json_body(response)
    if body is None:
        failure = EngineFailed(f"engine on port {backend.port} answered {_describe(response)}")
        return failure.status_code, failure.to_body()
    request_id = body.get("request_id")
    if isinstance(request_id, str) and request_id:
        body["request_id"] = f"{backend.port}:{request_id}"
    return response.status_code, body
