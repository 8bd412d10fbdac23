"""The answers the inference port writes itself: errors, `/health`, `/livez`, chunks."""

from __future__ import annotations

from mlnode.common.errors import NotFound, Unauthorized, Unavailable
from mlnode.common.http.answers import error_response, json_response
from mlnode.infer.routing import Route

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


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
