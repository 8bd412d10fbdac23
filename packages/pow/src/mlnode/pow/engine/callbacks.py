"""Callbacks to the network node: the node's one sender (`mlnode.common.callbacks`) and policy.

A delivery succeeds on any HTTP status below 400. A failing one is retried after 1, 2, 4, ... s
(capped) up to `callback_attempts` tries, each try cut off after `callback_timeout_s` in all, and
the callback is dropped once `callback_deadline_s` have passed since it was queued; a 4xx other
than 408/425/429 is dropped at once (`dropped_refused`). Callbacks wait in one queue per
destination (scheme, host, port); at most `callback_per_destination` of them are in flight to one
destination and `callback_concurrency` in all, destinations taking turns, so a receiver that never
answers delays only its own callbacks. When `callback_queue` are waiting, the oldest of the
longest queue goes. A URL httpx cannot parse is dropped at once. Every drop is counted in
`stats()` (shown by `/status`); logs name a destination, never a whole URL.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from mlnode.common.callbacks import (
    CallbackPolicy,
    CallbackStats,
    DestinationSender,
    InvalidCallbackUrl,
    destination,
)
from mlnode.pow.engine.settings import PocEngineSettings

__all__ = ["CallbackSender", "CallbackStats", "InvalidCallbackUrl", "destination"]


class CallbackSender(DestinationSender):
    """The engine's sender: the common one under `CallbackPolicy.of(PocEngineSettings)`."""

    def __init__(
        self,
        settings: PocEngineSettings,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(CallbackPolicy.of(settings), client, clock)
