"""BLAKE3 of a stream's chunks, computed beside the transfer instead of after each chunk.

BLAKE3 releases the GIL, so a chunk hashed in a worker thread overlaps with gRPC sending or
receiving the next one, and with the reader's copy of the same chunk. Chunks are hashed in the
order given, so the digest is exactly `blake3(b"".join(chunks))`. At most `MAX_PENDING` chunks
wait for the worker, so a fast peer cannot make a reader hold more than a few extra chunks.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from blake3 import blake3

#: Below this a chunk is hashed inline: a thread hand-off costs more than it saves.
INLINE_BYTES = 256 << 10
MAX_PENDING = 2

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="transport-hash")

Buffer = bytes | memoryview


class OrderedHash:
    """`update` returns at once for large chunks; `digest` waits for every chunk given."""

    def __init__(self) -> None:
        self._hasher = blake3()
        self._pending: deque[Future[None]] = deque()

    def update(self, data: Buffer) -> None:
        """Hash `data` after every earlier chunk (the caller keeps `data` unchanged until then)."""
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()
        if not self._pending and memoryview(data).nbytes < INLINE_BYTES:
            self._hasher.update(data)
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft().result()
        previous = self._pending[-1] if self._pending else None
        self._pending.append(_POOL.submit(self._after, previous, data))

    def _after(self, previous: Future[None] | None, data: Buffer) -> None:
        # A worker waits only on a chunk submitted before its own, so never on a queued one.
        if previous is not None:
            previous.result()
        self._hasher.update(data)

    def digest(self) -> bytes:
        """The 32-byte BLAKE3 of every chunk given so far."""
        while self._pending:
            self._pending.popleft().result()
        return bytes(self._hasher.digest())
