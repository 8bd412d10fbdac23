"""Engine-side PoC settings, read from `MLNODE_POC_*` in the engine's environment and `.env`.

`infer` starts every engine with the MLNode's environment and working directory, so these are set
where the MLNode's other settings are (`.env`, the container's environment; environment wins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import MLNodeBaseSettings


class PocEngineSettings(MLNodeBaseSettings):
    """Limits, pins, callback policy and the decode codebook of the engine's PoC routes."""

    model_config = SettingsConfigDict(env_prefix="MLNODE_POC_", env_ignore_empty=True)

    codebook_path: Path | None = Field(
        None, description="Decode-scheme codebook (safetensors tensor `codebook`, or raw float32)."
    )
    codebook_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="sha256 of the codebook's float32 values; required with codebook_path.",
    )
    pin_seq_len: int | None = Field(None, ge=1, description="Refuse (409) any other seq_len.")
    pin_k_dim: int | None = Field(None, ge=1, description="Refuse (409) any other k_dim.")
    pin_max_tokens: int | None = Field(
        None, ge=1, description="Refuse (409) any other decode max_tokens."
    )
    max_seq_len: int = Field(
        4096, ge=1, description="Longest seq_len accepted (also capped by the model's length)."
    )
    max_chunk_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "Rows (nonces x seq_len) of one forward; larger batches are split. Unset: the "
            "engine's max_num_batched_tokens, the activation size vLLM reserved memory for."
        ),
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description=(
            "Nonces per PoC forward when the request sends no batch_size (the network node "
            "sends none). Unset: the engine's max_num_seqs. gonka's per-card profile: 8 on "
            "8xH100, 16 on H200, 32 on B200/B300."
        ),
    )
    max_queued_nonces: int = Field(
        100_000, ge=1, description="Nonces waiting in /generate jobs before 429."
    )
    max_queued_bytes: int = Field(
        2 << 30,
        ge=1,
        description=(
            "Estimated bytes queued /generate jobs may hold (parsed claims, results) before 429; "
            "one job estimated above it alone gets 413."
        ),
    )
    result_ttl_s: float = Field(300.0, gt=0, description="Seconds a finished job stays readable.")
    max_results: int = Field(1000, ge=1, description="Finished jobs kept at most (oldest go).")
    chat_yield: float = Field(
        1.0,
        ge=0,
        le=100,
        description=(
            "While chat requests are in flight, pause this many times a chunk's duration after "
            "each PoC chunk (1.0: PoC takes at most half of the engine's time)."
        ),
    )
    callback_interval_s: float = Field(
        5.0, gt=0, description="Seconds between deliveries of mined artifacts."
    )
    callback_attempts: int = Field(10, ge=1, description="Tries per callback before dropping it.")
    callback_backoff_s: float = Field(1.0, gt=0, description="First retry delay (doubles).")
    callback_backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    callback_timeout_s: float = Field(30.0, gt=0, description="Seconds one callback POST may take.")
    callback_deadline_s: float = Field(
        300.0, gt=0, description="Seconds after queueing when an undelivered callback is dropped."
    )
    callback_concurrency: int = Field(32, ge=1, description="Callbacks in flight at once.")
    callback_per_destination: int = Field(
        2, ge=1, description="Callbacks in flight at once to one scheme://host:port."
    )
    callback_queue: int = Field(
        10_000, ge=1, description="Callbacks waiting to be sent (oldest dropped beyond)."
    )
    mining_buffer: int = Field(
        1_000_000, ge=1, description="Mined artifacts awaiting delivery (oldest dropped beyond)."
    )
    engine_retries: int = Field(
        3, ge=0, description="Retries of a failed chunk (same nonces) before the job fails."
    )
    engine_retry_delay_s: float = Field(
        1.0, ge=0, description="Pause after a failed chunk before the next one."
    )
    validation_inference: bool = Field(
        False, description="Reported as poc_validation_inference by /versions."
    )

    @model_validator(mode="after")
    def _codebook_pair(self) -> Self:
        if (self.codebook_path is None) != (self.codebook_sha256 is None):
            raise ValueError("MLNODE_POC_CODEBOOK_PATH and MLNODE_POC_CODEBOOK_SHA256 go together")
        return self
