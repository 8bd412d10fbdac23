"""The answers the inference port gives itself (errors, `/health`, `/livez`) and body chunks."""

from __future__ import annotations

from mlnode.common.errors import NotFound, Unauthorized, Unavailable
from mlnode.common.http.answers import JsonAnswer
from mlnode.infer.routing import Route

_OK = JsonAnswer.of(200, {"status": "ok"})


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def local_answer(route: Route, path: bytes, serving: bool) -> JsonAnswer:
    """The answer to a request the inference port does not relay."""
    if route is Route.LIVEZ:
        return _OK
    if route is Route.HEALTH:
        if serving:
            return _OK
        return JsonAnswer.error(Unavailable("no inference engine is serving"))
    if route is Route.UNAUTHORIZED:
        return JsonAnswer.error(Unauthorized("missing or wrong bearer token"))
    return JsonAnswer.error(
        NotFound(f"{path.decode(errors='replace')} is not served on the inference port")
    )
