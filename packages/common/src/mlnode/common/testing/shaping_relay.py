"""A user-space WAN on loopback: a TCP relay that delays each direction and caps its rate.

These machines' kernel has no netem qdisc, so the link is shaped here: bytes read from one side
are delivered to the other `rtt_s / 2` after they finish crossing a link of `rate_bps`, through a
router buffer of `buffer_bytes` (a full buffer stops the relay reading, so the sender's TCP
backs off as it would at a bottleneck). Each side's TCP is the kernel's, over loopback: what
sees the latency and the cap is everything above TCP (HTTP/2 flow control, gRPC, our
handshakes). No loss: dropping bytes inside a relayed TCP stream is not packet loss, so it is
not simulated.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

READ_BYTES = 64 * 1024


@dataclass
class Link:
    """One direction: propagation delay, serialization at `rate_bps`, a bounded buffer."""

    delay_s: float
    rate_bps: float
    buffer_bytes: int
    free_at: float = 0.0

    def arrival(self, now: float, nbytes: int) -> float:
        """When bytes handed over at `now` reach the far side."""
        start = max(now, self.free_at)
        self.free_at = start + nbytes * 8 / self.rate_bps
        return self.free_at + self.delay_s


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    room = asyncio.Condition()
    queued = 0

    async def deliver() -> None:
        nonlocal queued
        while True:
            at, data = await queue.get()
            await asyncio.sleep(max(0.0, at - loop.time()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()
            async with room:
                queued -= len(data)
                room.notify_all()

    task = asyncio.create_task(deliver())
    try:
        while data := await reader.read(READ_BYTES):
            async with room:
                while queued + len(data) > link.buffer_bytes:
                    await room.wait()
                queued += len(data)
            queue.put_nowait((link.arrival(loop.time(), len(data)), data))
    except ConnectionError:
        pass
    queue.put_nowait((link.arrival(loop.time(), 0), b""))
    try:
        await task
    except ConnectionError:
        pass


class ShapingRelay:
    """Listens on 127.0.0.1 and relays every connection to `target_port`, shaped both ways."""

    def __init__(self, target_port: int, rtt_s: float, rate_bps: float) -> None:
        self.target_port = target_port
        self.rtt_s = rtt_s
        self.rate_bps = rate_bps
        # Twice the bandwidth-delay product, at least 256 KiB: a bottleneck router's buffer.
        self.buffer_bytes = max(256 * 1024, int(2 * rate_bps / 8 * rtt_s))
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def _link(self) -> Link:
        return Link(self.rtt_s / 2, self.rate_bps, self.buffer_bytes)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pipes = asyncio.gather(
            _pipe(reader, far_writer, self._link()),
            _pipe(far_reader, writer, self._link()),
            return_exceptions=True,
        )
        try:
            await pipes
        except asyncio.CancelledError:  # the relay stops
            far_writer.close()
            writer.close()

    def start(self) -> ShapingRelay:
        """Start listening; `port` is set on return."""
        self._thread.start()

        async def listen() -> int:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            return int(self._server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop listening and the relay's loop."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
