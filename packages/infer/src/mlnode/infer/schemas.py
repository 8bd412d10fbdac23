"""Request and status bodies of the inference routes (the network node's field names)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlnode.common.lifecycle import ServiceStatus


class InferenceUpRequest(BaseModel):
    """`POST /inference/up` body, as the network node sends it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, description="Model name or local directory vLLM serves.")
    dtype: str = Field("auto", min_length=1, description="vLLM --dtype (auto, bfloat16, ...).")
    additional_args: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Extra vLLM arguments, e.g. ['--max-model-len', '4096'].",
    )

    @field_validator("additional_args", mode="before")
    @classmethod
    def _lenient_args(cls, value: Any) -> Any:
        """Accept null and bare numbers, as network nodes send them."""
        if value is None:
            return []
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        return value


class UpPhase(StrEnum):
    """Where the start-up of the engines stands."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


class InferenceUpResponse(BaseModel):
    """Answer of `POST /inference/up`, `/inference/up/async` and `/inference/down`."""

    status: str = Field(
        description="'OK' when done, 'starting' when accepted to run in the background."
    )
    message: str | None = Field(None, description="What happens next.")


class InferenceUpStatus(BaseModel):
    """Answer of `GET /inference/up/status`."""

    status: UpPhase = Field(description="starting / running / failed / stopped / idle.")
    error: str | None = Field(None, description="Why the start failed, with the engine log tail.")
    model: str | None = Field(None, description="Model of the current or last start.")


class InstanceStatus(BaseModel):
    """One engine instance."""

    index: int = Field(description="Instance number.")
    state: str = Field(description="starting / healthy / unhealthy / dead / stopped.")
    healthy: bool = Field(description="True while it answers /health and receives requests.")
    port: int | None = Field(None, description="Loopback port of the engine.")
    pid: int | None = Field(None, description="Process (and process group) id of the engine.")
    gpus: list[int] = Field(description="CUDA devices it uses; empty on CPU.")
    restarts: int = Field(description="Automatic restarts so far.")
    exit_code: int | None = Field(None, description="Exit code when it died.")
    requests_in_flight: int = Field(description="Proxied requests it is answering now.")
    signal: str = Field(
        "health", description="What decided its health last: 'health' (/health) or 'progress'."
    )
    reason: str | None = Field(None, description="Why it is unhealthy, from that signal.")
    log_file: str = Field(description="Its output.")
    log_tail: str | None = Field(None, description="Last lines of its output once it died.")


class InferenceStatus(BaseModel):
    """Answer of `GET /inference/status`."""

    status: UpPhase = Field(description="starting / running / failed / stopped / idle.")
    healthy: bool = Field(description="False when an instance died or the last start failed.")
    model: str | None = Field(None, description="Served model.")
    dtype: str | None = Field(None, description="Its dtype.")
    additional_args: list[str] = Field(default_factory=list, description="Extra vLLM arguments.")
    tensor_parallel_size: int | None = Field(None, description="GPUs per instance (tensor).")
    pipeline_parallel_size: int | None = Field(None, description="GPUs per instance (pipeline).")
    inference_port: int = Field(description="Port of /v1/* and /health.")
    inference_port_error: str | None = Field(
        None, description="Why the inference port could not be opened."
    )
    requests_in_flight: int = Field(description="Proxied requests being answered now.")
    started_at: datetime | None = Field(None, description="When the current start began.")
    error: str | None = Field(None, description="Last failure.")
    instances: list[InstanceStatus] = Field(default_factory=list, description="Engine instances.")


class InferProgress(BaseModel):
    """Figures of the inference service."""

    instances: int = Field(description="Engine instances started.")
    healthy_instances: int = Field(description="Instances that answer their health check.")
    requests_in_flight: int = Field(description="Requests the proxy is relaying now.")
    inference_port: int = Field(description="Port of the OpenAI-compatible proxy.")


class InferServiceStatus(ServiceStatus[InferProgress]):
    """The inference service in `GET /api/v1/state`."""
