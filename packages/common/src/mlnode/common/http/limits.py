"""Bounds of one client connection, kept by the REST port and the inference port alike.

The numbers follow production HTTP servers. A head is at most 32 KiB (nginx's
`large_client_header_buffers 4 8k`) and 100 header lines (Apache's `LimitRequestFields`); it
must arrive within 60 s of its first byte (nginx's `client_header_timeout`), a body may pause
at most 60 s between reads (`client_body_timeout`), and a kept-alive connection may sit idle
75 s (`keepalive_timeout`). The head deadline is absolute, so dripping a byte now and then does
not extend it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlnode.common.errors import MLNodeError


class HeaderTooLarge(MLNodeError):
    """The request head is longer, or has more lines, than the port accepts."""

    status_code = 431
    code = "header_too_large"


class RequestTimeout(MLNodeError):
    """The client did not send its request in time."""

    status_code = 408
    code = "request_timeout"


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of one client connection."""

    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 60.0
    body_timeout_s: float = 60.0
    keepalive_timeout_s: float = 75.0
    max_body_bytes: int = 4 << 20
