import asyncio

import torch

from mlnode.common.testing import TransportHub
from mlnode.common.transport.aio import AsyncTransport


async def test_async_receive_waits_without_blocking_the_loop() -> None:
    hub = TransportHub()
    a, b = AsyncTransport(hub.node("a")), AsyncTransport(hub.node("b"))
    waiting = asyncio.create_task(b.receive("t", "r", ["a"], timeout=10))
    await asyncio.sleep(0.05)  # the loop runs while receive waits
    assert not waiting.done()
    await a.send("b", {"x": torch.ones(2)}, "t", "r")
    got = await asyncio.wait_for(waiting, 10)
    assert torch.equal(got["a"]["x"], torch.ones(2))
