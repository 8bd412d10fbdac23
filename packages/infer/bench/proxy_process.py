"""A bare inference proxy in front of one engine port, for the validation benchmark.

Usage: python bench/proxy_process.py LISTEN_PORT ENGINE_PORT on|off LOGPROBS_MODE
Serves until killed; `on` rewrites token ids, `off` relays logprobs answers untouched.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from mlnode.common.engines import EngineClient
from mlnode.infer.balancer import Backend, LeastConnections
from mlnode.infer.proxy import Relay
from mlnode.infer.server import InferenceServer
from mlnode.infer.upstream import UpstreamPool
from mlnode.infer.validation.hook import ValidationGate


async def serve(port: int, engine_port: int, rewrite: bool, mode: str) -> None:
    balancer = LeastConnections()
    balancer.set_backends([Backend(key="0", host="127.0.0.1", port=engine_port)])
    engines = EngineClient()
    gate = ValidationGate(lambda: balancer.backends, lambda: engines, rewrite_token_ids=rewrite)
    gate.configure(mode, forcing=True)
    relay = Relay(balancer, UpstreamPool(5.0, None, 256), lambda: True, gate)
    server = InferenceServer(relay, "127.0.0.1", port)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on", sys.argv[4]))
