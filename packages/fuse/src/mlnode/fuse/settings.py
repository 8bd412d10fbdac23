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
    peer_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Deadline of a peer's model listing, and the fixed part of each fetch's.",
    )
    peer_min_bytes_per_s: float = Field(
        default=float(1 << 20),
        gt=0,
        description=(
            "Slowest transfer a fetch from a peer may take: each fetch's deadline is "
            "PEER_TIMEOUT_S plus the tensor's listed size at this rate."
        ),
    )
    mapped_reads: bool = Field(
        default=False,
        description=(
            "Map local tensors instead of copying them with pread: faster, but a checkpoint "
            "truncated while a fusion reads it kills the whole process (SIGBUS)."
        ),
    )
