"""Render every error in one JSON shape with its real status code."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mlnode.common.errors import MLNodeError

log = logging.getLogger(__name__)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _mlnode_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MLNodeError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _location(tuple(first.get("loc", ())))
    body = {
        "error": {
            "type": "RequestValidationError",
            "message": f"{param}: {first.get('msg', 'invalid')}",
            "code": "invalid_request",
            "param": param,
        },
        "detail": [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ],
    }
    return JSONResponse(body, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Typed MLNode errors and request validation errors share one body shape."""
    app.add_exception_handler(MLNodeError, _mlnode_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
