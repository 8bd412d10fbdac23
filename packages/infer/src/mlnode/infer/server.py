"""The inference port: `/v1/*` through the proxy and `GET /health`, served in the node's loop.

The network node is configured with an inference URL of its own (by convention port 5000), so
this second listener runs beside the REST API in the same event loop; the REST server owns the
signals and closes this one from its lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from mlnode.infer.proxy import Relay

log = logging.getLogger(__name__)

_GRACE_S = 1.0


class InferenceServer:
    """Listens on its own port; every connection is a `ClientConnection` of the relay."""

    def __init__(self, relay: Relay, host: str, port: int) -> None:
        self.relay = relay
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.relay.protocol, sock=sock, backlog=1024)
        log.info("inference proxy listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting; close idle connections now and busy ones after a short grace."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GRACE_S
        while True:
            for conn in list(self.relay.connections):
                if conn.idle:
                    conn.close()
            if not self.relay.connections or loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.relay.connections):
            conn.abort()
        await server.wait_closed()
