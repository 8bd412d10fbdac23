"""Request and response bodies of the node routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlnode.common.hardware import Hardware
from mlnode.common.lifecycle import ServiceStatus
from mlnode.fuse.schemas import FuseServiceStatus
from mlnode.infer import InferServiceStatus
from mlnode.pow.v1.schemas import PowServiceStatus
from mlnode.train.schemas import TrainStatus

#: A service's status with its own progress schema (the plain one for services without one).
AnyServiceStatus = (
    PowServiceStatus | InferServiceStatus | TrainStatus | FuseServiceStatus | ServiceStatus
)


class NodeStateResponse(BaseModel):
    """`GET /api/v1/state`: the network node reads `state`."""

    state: str = Field(description="POW, INFERENCE, TRAIN, FUSE or STOPPED.")
    version: str = Field(description="MLNode version.")
    poc_validation_inference: bool = Field(
        False, description="True when the engine keeps serving inference while it validates PoC."
    )
    loaded_model: str | None = Field(None, description="Model the engines serve, if any.")
    services: list[AnyServiceStatus] = Field(
        description="Status of every service; `progress` has the schema of the service's kind."
    )


class VersionsResponse(BaseModel):
    """`GET /api/v1/versions`."""

    version: str = Field(description="MLNode version.")
    vllm_version: str | None = Field(None, description="The serving engine's vLLM version.")
    poc_validation_inference: bool = Field(
        False, description="True when the engine keeps serving inference while it validates PoC."
    )


class StopResponse(BaseModel):
    """`POST /api/v1/stop`."""

    status: str = Field("OK", description="OK once every service has stopped.")


class HealthResponse(BaseModel):
    """`/health`, `/livez`, `/readyz`."""

    status: str = Field(description="ok, or unavailable with reasons.")
    problems: list[str] = Field(default_factory=list, description="Why the node is not ready.")


class Capabilities(Hardware):
    """`GET /api/v1/capabilities`: what a scheduler needs to place work here."""

    state: str = Field(description="Service that holds the GPU, or STOPPED.")
    version: str = Field(description="MLNode version.")
