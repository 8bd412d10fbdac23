"""Request and status bodies of the fusion routes (also the CLI's config file format)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlnode.common.lifecycle import Phase, ServiceStatus
from mlnode.fuse.methods.base import MethodName

SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}
OutputDtype = Literal["float32", "float16", "bfloat16"]


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as '5GB', '500MiB'."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    if match is None or match.group(2).upper() not in SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '5GB', '500MiB')")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


class ModelRef(BaseModel):
    """A model on this node (`path`) or shared by a peer for the same task (`peer_id`)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="Safetensors file or checkpoint directory.")
    peer_id: str | None = Field(None, description="Known peer that shares the model.")

    @model_validator(mode="after")
    def _one_location(self) -> ModelRef:
        if (self.path is None) == (self.peer_id is None):
            raise ValueError("give exactly one of path and peer_id")
        return self


class SourceRef(ModelRef):
    """One model to fuse and its weight (for fedavg, its sample count)."""

    weight: float | None = Field(None, description="Weight of this model; method default if unset.")


class OutputSpec(BaseModel):
    """Where and how the fused checkpoint is written."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Directory to create; must not exist yet.")
    dtype: OutputDtype | None = Field(
        None, description="Dtype of floating tensors; the reference model's dtype if unset."
    )
    max_shard_size: int = Field(5 * 10**9, gt=0, description="Bytes per shard, or e.g. '2GB'.")

    @field_validator("max_shard_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


class FuseRequest(BaseModel):
    """Fuse `sources` with `method` into a new checkpoint at `output.path`."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, description="Task whose peers share the remote models.")
    method: MethodName = Field(description="Fusion method.")
    params: dict[str, Any] = Field(default_factory=dict, description="The method's parameters.")
    base: ModelRef | None = Field(None, description="Base model (task vectors, copied tensors).")
    sources: list[SourceRef] = Field(min_length=1, max_length=1024, description="Models to fuse.")
    output: OutputSpec = Field(description="The fused checkpoint.")
    keep_base: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Glob patterns of tensor names copied unchanged from the base.",
    )

    @model_validator(mode="after")
    def _base_for_filters(self) -> FuseRequest:
        if self.keep_base and self.base is None:
            raise ValueError("keep_base needs a base model")
        return self


class FuseProgress(BaseModel):
    """Figures of the current or last fusion."""

    tensors_done: int = Field(0, description="Output tensors written.")
    tensors_total: int = Field(0, description="Output tensors planned.")
    bytes_done: int = Field(0, description="Output bytes written.")
    bytes_total: int = Field(0, description="Output bytes planned.")
    bytes_per_s: float = Field(0.0, description="Output bytes per second so far.")


class FuseServiceStatus(ServiceStatus[FuseProgress]):
    """The fusion service in `GET /api/v1/state`."""


class FuseJobStatus(FuseProgress):
    """The current or last fusion."""

    phase: Phase = Field(description="Phase of the current or last fusion.")
    task_id: str | None = Field(None, description="Task of the current or last fusion.")
    method: MethodName | None = Field(None, description="Its method.")
    output: str | None = Field(None, description="Its output directory.")
    started_at: datetime | None = Field(None, description="When it started.")
    finished_at: datetime | None = Field(None, description="When it ended.")
    error: str | None = Field(None, description="Why it failed or was refused.")


class ShareRequest(BaseModel):
    """Offer a local checkpoint to the known peers of a task."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, description="Task whose peers may pull the model.")
    path: str = Field(description="Safetensors file or checkpoint directory to share.")


class ShareStatus(BaseModel):
    """A model this node shares."""

    task_id: str = Field(description="Task whose peers may pull it.")
    path: str = Field(description="The shared checkpoint.")
    tensors: int = Field(description="Number of tensors on offer.")
    bytes: int = Field(description="Their total size in bytes.")
