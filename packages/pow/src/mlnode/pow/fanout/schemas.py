"""The node's own bodies of the PoC v2 fan-out, `/api/v1/inference/pow/*`: summaries over instances.

The requests and `/versions` are the engine's contract (`mlnode.pow.poc.schemas`): the node checks
their `*Body` layer, keeps the keys it does not know and forwards them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PocStopRequest(BaseModel):
    """`POST /inference/pow/stop`: the network node sends `{}`."""

    model_config = ConfigDict(extra="allow")


class BackendResult(BaseModel):
    """What one engine instance answered."""

    port: int = Field(description="Loopback port of the engine instance.")
    status: str = Field(description="OK / stopped, or the failure.")


class BackendError(BaseModel):
    """An engine instance that failed the call."""

    port: int = Field(description="Loopback port of the engine instance.")
    error: str = Field(description="Why it failed (status and body, or the transport error).")


class PocInitResponse(BaseModel):
    """Summary of `/init/generate` over the instances."""

    status: str = Field("OK", description="OK when at least one instance started.")
    backends: int = Field(description="Instances that started.")
    n_groups: int = Field(description="Instances asked (nonce groups).")
    results: list[BackendResult] = Field(description="One per instance that started.")
    errors: list[BackendError] | None = Field(None, description="Instances that failed.")


class PocStopResponse(BaseModel):
    """Summary of `/stop` over the instances."""

    status: str = Field("OK", description="OK (failures are listed in errors).")
    results: list[BackendResult] = Field(default_factory=list, description="Stopped instances.")
    errors: list[BackendError] | None = Field(None, description="Instances that failed.")
    message: str | None = Field(None, description="Set when there was nothing to stop.")


class PocBackendStatus(BaseModel):
    """One instance's `/api/v1/pow/status`, with its port."""

    model_config = ConfigDict(extra="allow")

    port: int = Field(description="Loopback port of the engine instance.")
    status: str = Field(description="IDLE / GENERATING / ..., or UNREACHABLE.")
    config: dict[str, Any] | None = Field(None, description="Mining parameters while generating.")
    stats: dict[str, Any] | None = Field(None, description="Nonces processed and rate.")
    non_finite_dropped: int | None = Field(
        None,
        description="Nonces the engine left out of its artifacts because a decode step was "
        "non-finite (never delivered as -1, which the network node refuses).",
    )
    error: str | None = Field(None, description="Why the instance could not be read.")


class PocStatusResponse(BaseModel):
    """`GET /inference/pow/status`."""

    status: str = Field(
        description="GENERATING (all), IDLE (all), MIXED (any other mix, all VALIDATING or "
        "UNREACHABLE included), or NO_BACKENDS."
    )
    backends: list[PocBackendStatus] = Field(description="Per-instance detail.")
