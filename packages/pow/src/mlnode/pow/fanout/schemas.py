"""Bodies of the PoC v2 fan-out, `/api/v1/inference/pow/*` (the network node's field names).

Requests keep fields this side does not know (`extra="allow"`): they are the engine's to read,
and a newer network node may add some.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PocParams(BaseModel):
    """`params`: the model the proof runs on and its sequence length."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="Served model the proof runs on.")
    seq_len: int = Field(gt=0, description="Tokens per nonce.")


class PocInitGenerateRequest(BaseModel):
    """`POST /inference/pow/init/generate` (Go `PoCInitGenerateRequestV2`)."""

    model_config = ConfigDict(extra="allow")

    block_hash: str = Field(min_length=1, description="Block hash seeding the proof.")
    block_height: int = Field(description="Height of that block.")
    public_key: str = Field(min_length=1, description="Prover's public key.")
    node_id: int = Field(ge=0, description="This MLNode's index among the participant's nodes.")
    node_count: int = Field(gt=0, description="How many MLNodes the participant runs.")
    params: PocParams = Field(description="Model and sequence length.")
    url: str | None = Field(None, description="Callback base; engines POST {url}/generated.")
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Nonces per engine iteration; forwarded only when sent (the newest network "
        "node sends none, and each engine then uses its own, MLNODE_POC_BATCH_SIZE).",
    )


class PocGenerateRequest(BaseModel):
    """`POST /inference/pow/generate` (Go `PoCGenerateRequestV2`): compute or validate nonces."""

    model_config = ConfigDict(extra="allow")

    block_hash: str = Field(min_length=1, description="Block hash of the proof.")
    block_height: int = Field(description="Height of that block.")
    public_key: str = Field(min_length=1, description="The prover's public key.")
    node_id: int = Field(ge=0, description="The prover's node id.")
    node_count: int = Field(gt=0, description="The prover's node count.")
    nonces: list[int] = Field(max_length=100_000, description="Nonces to compute.")
    params: PocParams = Field(description="Model and sequence length.")
    wait: bool = Field(False, description="Answer with the result instead of queueing.")
    url: str | None = Field(None, description="Callback base for a queued request.")


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


class PocVersions(BaseModel):
    """`GET /inference/pow/versions`: what the engine's PoC reports."""

    model_config = ConfigDict(extra="allow")

    vllm_version: str | None = Field(None, description="vLLM version of the engine.")
    poc_validation_inference: bool = Field(
        False, description="True when the engine serves inference while it validates PoC."
    )
