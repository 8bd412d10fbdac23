"""How the API server reaches the worker: vLLM's `collective_rpc`, plus the chat load it sees."""

from __future__ import annotations

from typing import Any, Protocol


class EngineRpc(Protocol):
    """The engine as the PoC runner needs it."""

    async def call(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        """Run a `PocWorkerExtension` method on the worker(s); rank 0's result."""
        ...

    def chat_in_flight(self) -> int:
        """Generation requests (chat, completions) the engine is serving now."""
        ...


class VllmRpc:
    """`EngineRpc` over vLLM's `EngineClient` (AsyncLLM)."""

    def __init__(self, engine_client: Any) -> None:
        self._client = engine_client

    async def call(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        """`collective_rpc(method, args=(payload,))`; every tensor-parallel rank runs it."""
        args = () if payload is None else (payload,)
        results = await self._client.collective_rpc(method, args=args)
        return results[0]

    def chat_in_flight(self) -> int:
        """`get_num_unfinished_requests()` of the engine client (0 where it has none)."""
        count = getattr(self._client, "get_num_unfinished_requests", None)
        return int(count()) if callable(count) else 0
