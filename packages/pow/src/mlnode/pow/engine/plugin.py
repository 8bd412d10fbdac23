"""The vLLM endpoint plugin (`vllm.endpoint_plugins` entry point `mlnode_pow`).

vLLM 0.32 loads endpoint plugins in its API server when their name is in `VLLM_PLUGINS`: each
attaches routes while the app is built and gets the engine client once the engine runs. The
worker half is `PocWorkerExtension`, mixed into the worker by `--worker-extension-cls`; without
that flag the routes are not attached at all, so they never exist half-working.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from argparse import Namespace
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI

from mlnode.pow.engine.callbacks import CallbackSender
from mlnode.pow.engine.checks import EngineFacts
from mlnode.pow.engine.errors import PocHttpError
from mlnode.pow.engine.protocol import RPC_DESCRIBE, ModelInfo
from mlnode.pow.engine.routes import STATE_KEY, VERSIONS_KEY, error_response, router
from mlnode.pow.engine.rpc import EngineRpc, VllmRpc
from mlnode.pow.engine.runner import PocRunner
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.engine.worker import WORKER_EXTENSION
from mlnode.pow.poc.decode import Codebook, CodebookError
from mlnode.pow.poc.schemas import PocVersions

log = logging.getLogger(__name__)

PLUGIN_NAME = "mlnode_pow"


def _vllm_version() -> str:
    """The serving vLLM's version ("unknown" under infer's fake engine, which has no vLLM)."""
    try:
        import vllm
    except ImportError:
        return "unknown"
    return str(vllm.__version__)


def _implementation_version() -> str:
    try:
        return f"mlnode-pow/{version('mlnode-pow')}"
    except PackageNotFoundError:
        return "mlnode-pow/unknown"


class EngineFactsProvider:
    """`EngineFacts` of this engine; asks the worker about the model once, when first needed."""

    def __init__(
        self,
        rpc: EngineRpc,
        vllm_config: Any,
        served: tuple[str, ...],
        settings: PocEngineSettings,
    ) -> None:
        self._rpc = rpc
        self._model_config = vllm_config.model_config
        self._max_batched = int(vllm_config.scheduler_config.max_num_batched_tokens)
        self._max_seqs = int(vllm_config.scheduler_config.max_num_seqs)
        self._served = served
        self._info: ModelInfo | None = None
        self._codebook: Codebook | None = None
        self._codebook_error: str | None = None
        if settings.codebook_path is not None and settings.codebook_sha256 is not None:
            try:
                self._codebook = Codebook.load(settings.codebook_path, settings.codebook_sha256)
            except CodebookError as exc:
                self._codebook_error = str(exc)
                log.error("decode scheme disabled: %s", exc)

    async def __call__(self) -> EngineFacts:
        """The facts (503 when the worker cannot be asked)."""
        if self._info is None:
            try:
                self._info = ModelInfo.from_wire(await self._rpc.call(RPC_DESCRIBE))
            except Exception as exc:  # the engine's errors arrive as plain exceptions
                raise PocHttpError(503, f"the engine did not describe its model: {exc}") from exc
        return EngineFacts(
            served_models=self._served,
            architecture=self._info.architecture,
            hidden=self._info.hidden,
            max_model_len=int(self._model_config.max_model_len),
            max_batched_tokens=self._max_batched,
            max_num_seqs=self._max_seqs,
            unsupported=self._info.unsupported,
            decode_unsupported=self._info.decode_unsupported,
            codebook=self._codebook,
            codebook_error=self._codebook_error,
        )


def _with_shutdown(
    original: Callable[[Any], AbstractAsyncContextManager[Any]],
) -> Callable[[FastAPI], AbstractAsyncContextManager[Any]]:
    """VLLM's lifespan, then the runner's shutdown: no PoC task outlives the server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with original(app) as state:
            try:
                yield state
            finally:
                runner: PocRunner | None = getattr(app.state, STATE_KEY, None)
                if runner is not None:
                    await runner.shutdown()

    return lifespan


def stop_before_engine(engine_client: Any, runner: PocRunner) -> None:
    """Make the engine client's `shutdown` close the runner first.

    vLLM's server stops the engine client on SIGTERM before the app's lifespan ends; a PoC chunk
    sent to an engine core that is shutting down holds its teardown until vLLM kills it. The
    wrapper (on this instance only) stops PoC and waits for the chunk in flight, then shuts down.
    """
    original = engine_client.shutdown
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def shutdown(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == loop_thread or loop.is_closed():
            runner.refuse_new_work()  # called from the loop itself: it cannot wait for it
        else:
            try:
                asyncio.run_coroutine_threadsafe(runner.close(), loop).result(timeout=10)
            except Exception:  # never keep the engine from shutting down
                log.exception("PoC did not stop before the engine's shutdown")
        return original(*args, **kwargs)

    engine_client.shutdown = shutdown


def enable_logging() -> None:
    """Give `mlnode.*` loggers a stderr handler (the engine's log file) and undo their disabling.

    The server's logging config disables every logger that existed before it ran, ours included,
    so without this the runner's and the callbacks' warnings reach no log.
    """
    root = logging.getLogger("mlnode")
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("mlnode.") and isinstance(logger, logging.Logger):
            logger.disabled = False
    root.disabled = False
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


class PocEndpointPlugin:
    """Adds the PoC v2 routes to vLLM's OpenAI-compatible server."""

    name = PLUGIN_NAME
    required_tasks = ("generate",)

    def __init__(self) -> None:
        self._attached = False

    def attach_router(self, app: FastAPI) -> None:
        """Attach the routes, only when the worker extension is configured."""
        args = getattr(app.state, "args", None)
        configured = getattr(args, "worker_extension_cls", "")
        if configured != WORKER_EXTENSION:
            log.error(
                "PoC routes not attached: start the engine with --worker-extension-cls %s "
                "(it has %r)",
                WORKER_EXTENSION,
                configured,
            )
            return
        app.include_router(router)
        app.add_exception_handler(PocHttpError, error_response)
        app.router.lifespan_context = _with_shutdown(app.router.lifespan_context)
        self._attached = True

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        """Create the runner and its callback sender inside the server's event loop."""
        if not self._attached or engine_client is None:
            return
        enable_logging()
        settings = PocEngineSettings()
        rpc = VllmRpc(engine_client)
        served = tuple(args.served_model_name or [args.model])
        facts = EngineFactsProvider(rpc, engine_client.vllm_config, served, settings)
        sender = CallbackSender(settings)
        runner = PocRunner(rpc, facts, settings, sender)
        sender.start()
        runner.start()
        stop_before_engine(engine_client, runner)
        setattr(state, STATE_KEY, runner)
        setattr(
            state,
            VERSIONS_KEY,
            PocVersions(
                vllm_version=_vllm_version(),
                gonka_poc_version=_implementation_version(),
                poc_validation_inference=settings.validation_inference,
            ),
        )
        log.info("PoC v2 routes ready for %s", ", ".join(served))
