"""uvicorn's httptools protocol with the limits a public HTTP server keeps on request heads.

uvicorn bounds neither the size nor the arrival time of a request head: a client may send
headers without end (the parser keeps them all) or open connections and never finish a request.
`limited_protocol` returns a subclass that refuses a head past `max_head_bytes` or
`max_headers` lines (431), and one not complete `header_timeout_s` after the connection opened
or its first byte arrived (408), closing the connection; the numbers are the inference port's
(nginx's defaults). Kept-alive idle connections keep uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlnode.common.errors import BadRequest, MLNodeError
from mlnode.common.http.answers import error_response
from mlnode.common.http.limits import HeaderTooLarge, HttpLimits, RequestTimeout


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that bounds each request head in bytes, lines and time."""

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock: the first request must come within the head timeout."""
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser no more head bytes than allowed; refuse with 431/400 otherwise."""
        self._unset_keepalive_if_required()
        try:
            while data:
                if not self._in_head:
                    self.parser.feed_data(data)
                    return
                self._arm_head_timer()
                room = max(self.limits.max_head_bytes - self._head_bytes, 0)
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
                self.parser.feed_data(piece)
                if data and self._in_head and self._head_bytes >= self.limits.max_head_bytes:
                    raise HeaderTooLarge(
                        f"request head exceeds {self.limits.max_head_bytes} bytes "
                        "(MLNODE_MAX_HEADER_BYTES)"
                    )
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, MLNodeError) else BadRequest(str(exc)))
        except httptools.HttpParserUpgrade:
            self._refuse(BadRequest("protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._refuse(BadRequest(f"malformed HTTP request: {exc}"))
        except MLNodeError as exc:
            self._refuse(exc)

    def on_message_begin(self) -> None:
        """A request starts."""
        super().on_message_begin()
        self._in_head = True
        self._head_lines = 0
        self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the line."""
        self._head_lines += 1
        if self._head_lines > self.limits.max_headers:
            raise HeaderTooLarge(
                f"more than {self.limits.max_headers} header lines (MLNODE_MAX_HEADERS)"
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is complete: its clock stops."""
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next head starts from nothing (its clock starts with its first byte)."""
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and self.transport is not None:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self.limits.header_timeout_s, self._head_expired)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0 and not self.pipeline and self.cycle is None:
            self.transport.close()
            return
        why = f"request head not complete within {self.limits.header_timeout_s:g} s"
        self._refuse(RequestTimeout(why))

    def _refuse(self, error: MLNodeError) -> None:
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(error_response(error, keep_alive=False))
        self.transport.close()


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`) with these limits."""
    return type("LimitedHttp", (LimitedHttpToolsProtocol,), {"limits": limits})
