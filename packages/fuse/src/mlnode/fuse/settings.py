"""Settings of mlnode-fuse (`MLNODE_FUSE_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings


class FuseSettings(MLNodeBaseSettings):
    """How fusion reads local checkpoints."""

    model_config = SettingsConfigDict(env_prefix="MLNODE_FUSE_", env_file=ENV_FILE, extra="ignore")

    prefetch_tensors: int = Field(
        default=1,
        ge=0,
        le=8,
        description="Tensors read ahead while one merges (each costs one tensor per model).",
    )
    mapped_reads: bool = Field(
        default=False,
        description=(
            "Map local tensors instead of copying them with pread: faster, but a checkpoint "
            "truncated while a fusion reads it kills the whole process (SIGBUS)."
        ),
    )
