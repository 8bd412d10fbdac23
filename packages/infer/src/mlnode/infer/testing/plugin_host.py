"""Test engine only: the project's vLLM endpoint plugins, hosted by the fake engine as vLLM does.

vLLM's API server loads the `vllm.endpoint_plugins` entry points named in `VLLM_PLUGINS`, lets each
attach its routes to the app (which carries the server's arguments as `app.state.args`), and once
the engine runs calls `init_state(engine_client, app.state, args)`. `PluginHost` does the same, so
the fake engine serves the plugins' real routes. Its engine client answers `collective_rpc` with a
worker built from the stand-ins published in `mlnode.testing.worker_extensions` (the worker side
of a plugin, minus the model), as vLLM mixes `--worker-extension-cls` into its worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match

ENDPOINT_PLUGIN_GROUP = "vllm.endpoint_plugins"
WORKER_STAND_IN_GROUP = "mlnode.testing.worker_extensions"
#: The scheduler sizes the plugins read from `vllm_config` (vLLM's defaults for a small GPU).
MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS = 32


def endpoint_plugins() -> list[Any]:
    """The endpoint plugins `VLLM_PLUGINS` names, instantiated (vLLM loads no other)."""
    wanted = {n.strip() for n in os.environ.get("VLLM_PLUGINS", "").split(",") if n.strip()}
    return [ep.load()() for ep in entry_points(group=ENDPOINT_PLUGIN_GROUP) if ep.name in wanted]


def stand_in_worker() -> Any:
    """One object with the methods of every published worker stand-in."""
    bases = tuple(ep.load() for ep in entry_points(group=WORKER_STAND_IN_GROUP))
    return type("FakeWorker", bases or (object,), {})()


class FakeEngineClient:
    """What a plugin gets as vLLM's `engine_client`: config, `collective_rpc`, load, `shutdown`."""

    def __init__(
        self, args: argparse.Namespace, in_flight: Callable[[], int], rpc_delay_s: float
    ) -> None:
        model_config = SimpleNamespace(max_model_len=args.max_model_len)
        scheduler_config = SimpleNamespace(
            max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS, max_num_seqs=MAX_NUM_SEQS
        )
        self.vllm_config = SimpleNamespace(
            model_config=model_config, scheduler_config=scheduler_config
        )
        self._worker = stand_in_worker()
        self._in_flight = in_flight
        self._rpc_delay_s = rpc_delay_s

    async def collective_rpc(self, method: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """The worker's `method(*args)` off the server's loop, as one rank's result list.

        vLLM's engine core runs it in another process between scheduler steps; the delay stands
        for the step, so a mining loop leaves the server time to answer.
        """
        result = await asyncio.to_thread(getattr(self._worker, method), *args)
        await asyncio.sleep(self._rpc_delay_s)
        return [result]

    def get_num_unfinished_requests(self) -> int:
        """Generation requests in flight."""
        return self._in_flight()

    def shutdown(self) -> None:
        """Nothing to stop: there is no engine core process."""


class PluginHost:
    """A FastAPI app holding the plugins' routes; the fake engine forwards matching requests."""

    def __init__(self, args: argparse.Namespace, client: FakeEngineClient) -> None:
        self._args = args
        self._client = client
        self._plugins = endpoint_plugins()
        self.app = FastAPI(lifespan=self._lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        self.app.state.args = args
        for plugin in self._plugins:
            plugin.attach_router(self.app)

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        for plugin in self._plugins:
            await plugin.init_state(self._client, app.state, self._args)
        yield

    def serves(self, scope: dict[str, Any]) -> bool:
        """Whether a plugin route matches this request."""
        return any(route.matches(scope)[0] is not Match.NONE for route in self.app.router.routes)
