"""Complete HTTP/1.1 answers written as bytes, for the listeners that answer below ASGI."""

from __future__ import annotations

import json
from http import HTTPStatus

from mlnode.common.errors import MLNodeError


def phrase(status: int) -> bytes:
    """The reason phrase of `status`."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def error_response(error: MLNodeError, keep_alive: bool = True) -> bytes:
    """A complete JSON answer with MLNode's error body."""
    return json_response(error.status_code, error.to_body(), keep_alive)


def json_response(status: int, body: object, keep_alive: bool = True) -> bytes:
    """A complete JSON answer; `keep_alive=False` tells the client the connection closes."""
    payload = json.dumps(body).encode()
    reason = phrase(status)
    connection = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        status,
        reason,
        len(payload),
        connection,
        payload,
    )
