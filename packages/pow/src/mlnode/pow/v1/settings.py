"""Settings of the PoW service (environment prefix `MLNODE_POW_`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings


class PowSettings(MLNodeBaseSettings):
    """Where PoW computes and how its results are delivered."""

    model_config = SettingsConfigDict(
        env_prefix="MLNODE_POW_", env_file=ENV_FILE, extra="ignore", populate_by_name=True
    )

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: every CUDA GPU when there is one, else the CPU."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="torch threads for CPU compute; torch's default when unset."
    )
    cpu_matmul: Literal["f32", "f16"] = Field(
        "f32",
        description="Operand type of CPU matrix products: f32 (fast; same f16 rounding, "
        "another summation order) or f16 (torch's f16 GEMM as the reference; several times "
        "slower).",
    )
    # The common callback policy's names (`CallbackPolicy.of`); the older env names still work.
    callback_queue: int = Field(
        10_000,
        ge=1,
        validation_alias=AliasChoices(
            "callback_queue", "MLNODE_POW_CALLBACK_QUEUE", "MLNODE_POW_CALLBACK_MAX_PENDING"
        ),
        description="Callbacks kept while the receiver is down; beyond, the oldest is dropped.",
    )
    callback_timeout_s: float = Field(
        10.0, gt=0, description="Seconds one callback POST may take in all."
    )
    callback_backoff_s: float = Field(
        0.5,
        gt=0,
        validation_alias=AliasChoices(
            "callback_backoff_s",
            "MLNODE_POW_CALLBACK_BACKOFF_S",
            "MLNODE_POW_CALLBACK_BACKOFF_INITIAL_S",
        ),
        description="First retry delay of a failed callback (doubles).",
    )
    callback_backoff_max_s: float = Field(
        10.0, gt=0, description="Longest retry delay of a failed callback."
    )
    callback_attempts: int = Field(1000, ge=1, description="Tries per callback before dropping it.")
    callback_deadline_s: float = Field(
        3600.0,
        gt=0,
        description="Seconds after queueing when an undelivered callback is dropped.",
    )
    callback_concurrency: int = Field(8, ge=1, description="Callbacks in flight at once.")
    callback_per_destination: int = Field(
        1,
        ge=1,
        description="Callbacks in flight at once to one scheme://host:port (1: in order).",
    )
    validation_queue_size: int = Field(
        1_000, ge=1, description="Received batches waiting for validation; more are refused (503)."
    )

    @field_validator("cpu_threads", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value
