"""`TransportSettings`: the gRPC tensor transport's listener and limits (prefix `MLNODE_GRPC_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings

MIB = 1 << 20
GIB = 1 << 30


class TransportSettings(MLNodeBaseSettings):
    """Where the transport listens, how it chunks and what it accepts."""

    model_config = SettingsConfigDict(env_prefix="MLNODE_GRPC_", env_file=ENV_FILE, extra="ignore")

    host: str = Field(
        "0.0.0.0", description="Address the gRPC transport binds to (peers must reach it)."
    )
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    chunk_bytes: int = Field(
        4 * MIB, ge=4096, le=4 * MIB, description="Payload bytes per chunk frame (at most 4 MiB)."
    )
    max_tensor_bytes: int = Field(
        16 * GIB, ge=1, description="Largest tensor accepted from a peer, in bytes."
    )
    max_tensors: int = Field(
        100_000, ge=1, description="Most tensors accepted in one send or fetch."
    )
    max_inbox_bytes: int = Field(
        0,
        ge=0,
        description="Bytes pushed tensors may hold while no service took them (0: no limit).",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=256, le=MIB, description="Largest tensor header frame accepted, in bytes."
    )
    handshake_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client waits for a peer's handshake answer."
    )
    challenge_ttl_s: float = Field(
        30.0, gt=0, description="Seconds a server's challenge stays valid for the client's proof."
    )
    rpc_timeout_s: float = Field(
        3600.0, gt=0, description="Deadline of one send, list or fetch call, in seconds."
    )
    workers: int = Field(16, ge=2, le=256, description="Server threads (concurrent calls).")
    shutdown_grace_s: float = Field(
        1.0, ge=0, le=10, description="Seconds open calls get to finish when the node stops."
    )
