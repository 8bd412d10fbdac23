"""The answers the inference port writes itself: errors, `/health`, `/livez`, chunks."""

from __future__ import annotations

import json
from http import HTTPStatus

from mlnode.common.errors import MLNodeError, NotFound, Unauthorized, Unavailable
from mlnode.infer.routing import Route

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


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
    """A complete JSON answer."""
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


def local_answer(route: Route, path: bytes, serving: bool) -> bytes:
    """The answer to a request the inference port does not relay."""
    if route is Route.LIVEZ:
        return json_response(200, {"status": "ok"})
    if route is Route.HEALTH:
        if serving:
            return json_response(200, {"status": "ok"})
        return error_response(Unavailable("no inference engine is serving"))
    if route is Route.UNAUTHORIZED:
        return error_response(Unauthorized("missing or wrong bearer token"))
    return error_response(
        NotFound(f"{path.decode(errors='replace')} is not served on the inference port")
    )
