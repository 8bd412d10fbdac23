"""Settings of mlnode-train (`MLNODE_TRAIN_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import psutil
import torch
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.errors import InvalidRequest
from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings


class TrainSettings(MLNodeBaseSettings):
    """Where training runs and keeps its checkpoints."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix="MLNODE_TRAIN_", env_file=ENV_FILE, extra="ignore"
    )

    device: str = Field(
        "auto", description="auto (first GPU if any, else CPU), cpu, cuda or cuda:N."
    )
    local_devices: str = Field(
        "auto",
        description="Local ranks of one node (one process per device, DDP): auto (every visible "
        "GPU when training on cuda, one process on CPU), N (N ranks: the first N GPUs from "
        "DEVICE's index, or N CPU processes over gloo), or CUDA indices like 0,2,3.",
    )
    local_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Timeout of collectives among the local ranks, and of their start.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads torch may use; unset keeps torch's default."
    )
    checkpoint_root: Path | None = Field(
        None, description="Default parent of checkpoint dirs; unset means <state_dir>/train."
    )
    vote_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Wait for peers' weight hashes after a round, beyond the round deadline.",
    )
    join_timeout_s: float = Field(
        60.0,
        ge=0,
        description="At start, how long a worker waits for its peers to serve their state.",
    )

    max_layers: int = Field(
        512,
        ge=1,
        description="Most decoder layers of a model to train; 422 beyond. Building "
        "one takes milliseconds per layer of the node's CPU and GIL, even on the meta device.",
    )
    max_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory a training job may plan for (model state, activations, data); a "
        "start estimated beyond it is refused with 422. Unset: 90% of the GPU's memory when "
        "training on CUDA, else 80% of the RAM available at start.",
    )

    @field_validator("torch_threads", "checkpoint_root", "max_memory_bytes", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in {"auto", "cpu", "cuda"} and not value.startswith("cuda:"):
            raise ValueError(f"unknown device {value!r}: use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("local_devices")
    @classmethod
    def _known_local_devices(cls, value: str) -> str:
        value = value.replace(" ", "")
        parts = value.split(",")
        if value == "auto" or (value.isdigit() and int(value) >= 1):
            return value
        if len(parts) > 1 and all(p.isdigit() for p in parts) and len(set(parts)) == len(parts):
            return value
        raise ValueError(
            f"local_devices {value!r}: use auto, a count N >= 1, or two or more CUDA indices 0,1"
        )

    def memory_budget(self) -> int:
        """Bytes a training job may plan for on this node."""
        if self.max_memory_bytes is not None:
            return self.max_memory_bytes
        device = self.torch_device()
        if device.type == "cuda" and torch.cuda.is_available():
            total = torch.cuda.get_device_properties(device.index or 0).total_memory
            return int(total * 0.9)
        return int(psutil.virtual_memory().available * 0.8)

    def torch_device(self) -> torch.device:
        """The device to train on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def local_device_list(self) -> list[torch.device]:
        """One device per local rank; the first is the node process's own."""
        first = self.torch_device()
        spec = self.local_devices
        if first.type != "cuda":
            if spec == "auto":
                return [first]
            if not spec.isdigit():
                raise InvalidRequest("MLNODE_TRAIN_LOCAL_DEVICES lists GPUs but training is on CPU")
            return [first] * int(spec)
        count = torch.cuda.device_count()
        start = first.index or 0
        if spec == "auto":
            indices = [start] if first.index is not None else list(range(count))
        elif spec.isdigit():
            indices = list(range(start, start + int(spec)))
        else:
            indices = [int(i) for i in spec.split(",")]
        if not indices or max(indices) >= count:
            raise InvalidRequest(
                f"MLNODE_TRAIN_LOCAL_DEVICES asks for GPUs {indices} but {count} are visible"
            )
        return [torch.device("cuda", i) for i in indices]
