"""The node state: which service holds the GPU, stopping everything, readiness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mlnode.common.lifecycle import Service, ServiceGate

log = logging.getLogger(__name__)

STOPPED = "STOPPED"


class NodeState:
    """Node-level view over the gate's services; status reads never wait on a lock."""

    def __init__(self, gate: ServiceGate, stop_timeout_s: float = 30.0) -> None:
        self.gate = gate
        self.stop_timeout_s = stop_timeout_s
        self._stop_lock = asyncio.Lock()

    def state(self) -> str:
        """POW / INFERENCE / TRAIN / FUSE while one runs, else STOPPED."""
        running = self.gate.running()
        return running.kind.value if running is not None else STOPPED

    async def stop_all(self) -> None:
        """Stop every service; concurrent calls wait for the one in progress."""
        async with self._stop_lock:
            await asyncio.gather(*(self._stop_one(s) for s in self.gate.services))

    async def _stop_one(self, service: Service[Any]) -> None:
        # `/stop` answers 200 in every state: the newest client reads anything else as an error.
        try:
            await asyncio.wait_for(service.stop(), self.stop_timeout_s)
        except TimeoutError:
            log.error("%s did not stop within %.0f s", service.kind, self.stop_timeout_s)
        except Exception:
            log.exception("%s failed while stopping", service.kind)

    def problems(self) -> list[str]:
        """Why the node is not ready; empty when it is."""
        return [
            f"{s.kind}: {s.status().last_error or 'unhealthy'}"
            for s in self.gate.services
            if not s.healthy()
        ]

    async def open(self) -> None:
        """Open every service (server start-up)."""
        for service in self.gate.services:
            await service.open()

    async def close(self) -> None:
        """Close every service (server shutdown)."""
        await asyncio.gather(
            *(asyncio.wait_for(s.close(), self.stop_timeout_s) for s in self.gate.services),
            return_exceptions=True,
        )
