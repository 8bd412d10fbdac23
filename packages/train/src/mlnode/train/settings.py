"""Settings of mlnode-train (`MLNODE_TRAIN_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings


class TrainSettings(MLNodeBaseSettings):
    """Where training runs and keeps its checkpoints."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix="MLNODE_TRAIN_", env_file=ENV_FILE, extra="ignore"
    )

    device: str = Field(
        "auto", description="auto (first GPU if any, else CPU), cpu, cuda or cuda:N."
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

    @field_validator("torch_threads", "checkpoint_root", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in {"auto", "cpu", "cuda"} and not value.startswith("cuda:"):
            raise ValueError(f"unknown device {value!r}: use auto, cpu, cuda or cuda:N")
        return value

    def torch_device(self) -> torch.device:
        """The device to train on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
