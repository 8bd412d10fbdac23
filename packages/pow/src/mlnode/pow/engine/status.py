"""`/status` of the engine's PoC routes: SPEC §4.1's body plus queue and callback counters."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlnode.pow.engine.callbacks import CallbackStats
from mlnode.pow.poc.schemas import PocStatus


class QueueStats(BaseModel):
    """Queued `/generate` work."""

    jobs: int = Field(0, description="Jobs queued or running.")
    nonces: int = Field(0, description="Their nonces not computed yet.")


class EngineStatus(PocStatus):
    """SPEC's `{status, config, stats}` and what an operator needs to see besides."""

    queue: QueueStats = Field(default_factory=QueueStats, description="Queued /generate work.")
    callbacks: CallbackStats = Field(
        default_factory=CallbackStats, description="Callback deliveries, retries and drops."
    )
    mining_dropped: int = Field(
        0, description="Mined artifacts dropped because the delivery buffer was full."
    )
    last_error: str | None = Field(None, description="The last engine error of a PoC chunk.")
    non_finite_dropped: int = Field(
        0,
        description="Nonces left out of artifacts since the engine started because a decode step "
        "was non-finite (the network node refuses a callback holding a -1 step).",
    )
