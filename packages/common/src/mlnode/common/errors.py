"""Typed errors with one wire shape: `{"error": {"type", "message", "code", "param"}}`.

Services raise these; the API renders them with their HTTP status and the gRPC transport maps
them to status codes. A route never answers 200 with an error inside.

Engine-safe (standard library only): the PoC engine plugin builds its bodies with `error_body` too.
"""

from __future__ import annotations

from typing import ClassVar

ErrorBody = dict[str, dict[str, str | None]]


def error_body(kind: str, message: str, code: str, param: str | None) -> ErrorBody:
    """The one error body of every port and of the engine's PoC routes.

    `type` names the exception, `code` is the machine-readable reason (a string, never the HTTP
    status: the node relays the engine's refusals from `/inference/pow/generate` unchanged, so both
    must read alike), `param` the offending field.
    """
    return {"error": {"type": kind, "message": message, "code": code, "param": param}}


class MLNodeError(Exception):
    """Base of the errors a client can act on."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    #: Extra response headers (e.g. `Retry-After`).
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_body(self) -> ErrorBody:
        """The JSON body sent to clients."""
        return error_body(type(self).__name__, self.message, self.code, self.param)


class InvalidRequest(MLNodeError):
    """The request is well-formed JSON but asks for something impossible."""

    status_code = 422
    code = "invalid_request"


class BadRequest(MLNodeError):
    """The request is not valid HTTP (or uses what this listener does not speak)."""

    status_code = 400
    code = "bad_request"


class ServiceConflict(MLNodeError):
    """Another service holds the GPU."""

    status_code = 409
    code = "service_conflict"

    def __init__(self, running: str, wanted: str) -> None:
        super().__init__(
            f"{running} is running; stop it (POST /api/v1/stop) before starting {wanted}"
        )
        self.running = running


class NotRunning(MLNodeError):
    """The operation needs a service that is not running."""

    status_code = 409
    code = "not_running"


class NotFound(MLNodeError):
    """A named object does not exist."""

    status_code = 404
    code = "not_found"


class PeerUnknown(MLNodeError):
    """A peer's key is not registered (for the task it names)."""

    status_code = 403
    code = "peer_unknown"


class Unauthorized(MLNodeError):
    """Missing or wrong API token."""

    status_code = 401
    code = "unauthorized"


class EngineFailed(MLNodeError):
    """An engine (vLLM, a worker process) failed; the message carries its cause."""

    status_code = 502
    code = "engine_failed"


class Unavailable(MLNodeError):
    """Nothing can serve the request right now."""

    status_code = 503
    code = "unavailable"
