"""Errors of the engine's PoC routes, rendered in the project's one error shape."""

from __future__ import annotations

from pydantic import ValidationError

from mlnode.common.errors import ErrorBody, error_body


class PocHttpError(Exception):
    """A refusal with its HTTP status; `param` names the offending field when there is one."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code or _CODES.get(status, "engine_error")

    def body(self) -> ErrorBody:
        """`{"error": {type, message, code, param}}` as the node's errors: `code` is a string."""
        return error_body(type(self).__name__, self.message, self.code, self.param)


#: The node's codes for the same refusals (`mlnode.common.errors`, `mlnode.common.http`).
_CODES = {
    400: "bad_request",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


def invalid(message: str, param: str | None) -> PocHttpError:
    """422 naming the field."""
    return PocHttpError(422, message, param)


def conflict(message: str, param: str | None = None) -> PocHttpError:
    """409."""
    return PocHttpError(409, message, param)


def from_validation_error(exc: ValidationError) -> PocHttpError:
    """422 naming the first invalid field (`params.seq_len`, `nonces.3`, ...)."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    where = f"{param}: " if param else ""
    return invalid(f"{where}{first['msg']}", param)
