"""`CorkedWriter`: the writes of one event-loop turn leave as one send.

A proxied exchange writes a head and then a body in separate callbacks of the same turn; sent
one by one they cost a system call each and wake the reader twice. Gathered, they cost one.
"""

from __future__ import annotations

import asyncio


class CorkedWriter:
    """Buffers writes to a transport and sends them together at the end of the loop turn."""

    __slots__ = ("_loop", "_parts", "_scheduled", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._parts: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        """Queue `data`; it is sent once the current callbacks are done."""
        self._parts.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued now."""
        self._scheduled = False
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Send what is queued, then close."""
        self.flush()
        self.transport.close()
