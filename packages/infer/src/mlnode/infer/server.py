"""The inference port: `/v1/*` through the proxy and `GET /health`, served in the node's loop.

The network node is configured with an inference URL of its own (by convention port 5000), so
this second uvicorn server runs beside the REST API in the same event loop. It never installs
signal handlers: the main server owns SIGTERM and closes this one from its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn

from mlnode.common.errors import NotFound, Unavailable
from mlnode.infer.proxy import EngineProxy, Receive, Scope, Send, send_error, send_json

log = logging.getLogger(__name__)


class InferenceApp:
    """ASGI app of the inference port."""

    def __init__(self, proxy: EngineProxy, serving: Callable[[], bool]) -> None:
        self.proxy = proxy
        self.serving = serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route `/v1/*` to the proxy and answer `/health`."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/v1/"):
            await self.proxy(scope, receive, send)
        elif path == "/health":
            if self.serving():
                await send_json(send, 200, {"status": "ok"})
            else:
                await send_error(send, Unavailable("no inference engine is serving"))
        else:
            await send_error(send, NotFound(f"{path} is not served on the inference port"))


class _NoSignalServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the main server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class InferenceServer:
    """Runs `InferenceApp` on its own port as a task of the current loop."""

    def __init__(self, app: InferenceApp, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server = _NoSignalServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind (raises `OSError` when the port is taken) and serve in the background."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it Nagle holds each response body behind its headers for ~40 ms.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(False)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            task, self._task = self._task, None
            raise OSError(f"inference server did not start: {task.exception()!r}")
        log.info("inference proxy listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, close open connections, and wait for the task."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 3.0)
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        self._task = None
