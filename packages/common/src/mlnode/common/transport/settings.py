"""`TransportSettings`: the gRPC tensor transport's listener and limits (prefix `MLNODE_GRPC_`)."""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings
from mlnode.common.transport.inbox_budget import InboxLimits
from mlnode.common.transport.push_stream import StreamBounds

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
        description=(
            "Bytes pushed tensors (and pushes in progress) may hold while no service took them "
            "(0: half of this machine's RAM)."
        ),
    )
    max_inbox_peer_bytes: int = Field(
        0,
        ge=0,
        description="Of those, the bytes one peer may hold (0: half of MAX_INBOX_BYTES).",
    )
    max_inbox_task_bytes: int = Field(
        0, ge=0, description="Of those, the bytes one task may hold (0: all of MAX_INBOX_BYTES)."
    )
    max_inbox_peer_deliveries: int = Field(
        64, ge=1, description="Deliveries (any size, empty too) one peer may have waiting."
    )
    max_inbox_task_deliveries: int = Field(
        1024, ge=1, description="Deliveries one task may have waiting, all peers together."
    )
    inbox_ttl_s: float = Field(
        600.0, gt=0, description="Seconds a delivery waits for a service before it is dropped."
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
    handshake_workers: int = Field(
        4,
        ge=1,
        le=64,
        description="Threads that answer Hello and refuse calls (apart from WORKERS).",
    )
    max_calls_per_peer: int = Field(
        4, ge=1, le=256, description="Authenticated calls one peer may have open at once."
    )
    idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds an authenticated call may wait for the peer's next message.",
    )
    reserved_workers: int | None = Field(
        None,
        ge=0,
        description=(
            "Server threads kept for peers without a call open: once only this many are free, "
            "a peer's further calls are refused (RESOURCE_EXHAUSTED). Unset: a quarter of WORKERS."
        ),
    )
    min_bytes_per_s: int = Field(
        64 * 1024,
        ge=0,
        description=(
            "Slowest transfer accepted: a push or fetch whose peer moves fewer bytes per second "
            "of its own time over RATE_WINDOW_S is cancelled (0: no floor)."
        ),
    )
    rate_window_s: float = Field(
        10.0, gt=0, description="Seconds of the peer's time over which MIN_BYTES_PER_S is judged."
    )
    stream_pushes: int = Field(
        256,
        ge=0,
        description=(
            "Most pushes one push stream (one handshake) may carry; 0: push streams are "
            "neither offered nor used (one handshake per push)."
        ),
    )
    stream_bytes: int = Field(
        4 * GIB, ge=1, description="Most bytes one push stream may carry, all its pushes together."
    )
    stream_lifetime_s: float = Field(
        60.0, gt=0, description="Seconds after which a push stream is ended, pushes or not."
    )
    stream_idle_s: float = Field(
        10.0, gt=0, description="Seconds a push stream may wait between two pushes."
    )
    max_streams_per_connection: int = Field(
        16, ge=1, le=1024, description="Concurrent calls (HTTP/2 streams) on one connection."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Seconds a new connection gets to finish its HTTP/2 set-up."
    )
    connection_idle_s: float = Field(
        120.0, gt=0, description="Seconds a connection without calls stays open."
    )
    max_connections: int = Field(
        20_000, ge=1, description="Open connections the server accepts, all peers together."
    )
    keepalive_s: float = Field(
        60.0, gt=0, description="Seconds between keepalive pings on a connection with calls."
    )
    shutdown_grace_s: float = Field(
        1.0, ge=0, le=10, description="Seconds open calls get to finish when the node stops."
    )

    @model_validator(mode="after")
    def _reserve_inside_the_pool(self) -> Self:
        if self.reserved_workers is not None and self.reserved_workers >= self.workers:
            raise ValueError(
                f"MLNODE_GRPC_RESERVED_WORKERS ({self.reserved_workers}) must be below "
                f"MLNODE_GRPC_WORKERS ({self.workers})"
            )
        return self

    def reserved(self) -> int:
        """Threads kept for peers without a call open, the default resolved."""
        return self.workers // 4 if self.reserved_workers is None else self.reserved_workers

    def stream_bounds(self) -> StreamBounds:
        """What one push stream may carry."""
        return StreamBounds(
            self.stream_pushes, self.stream_bytes, self.stream_lifetime_s, self.stream_idle_s
        )

    def inbox_limits(self) -> InboxLimits:
        """The inbox's budgets, the automatic defaults resolved."""
        total = self.max_inbox_bytes or physical_memory() // 2
        return InboxLimits(
            total_bytes=total,
            peer_bytes=min(total, self.max_inbox_peer_bytes or total // 2),
            task_bytes=min(total, self.max_inbox_task_bytes or total),
            peer_deliveries=self.max_inbox_peer_deliveries,
            task_deliveries=self.max_inbox_task_deliveries,
            ttl_s=self.inbox_ttl_s,
        )


def physical_memory() -> int:
    """Bytes of RAM of this machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
