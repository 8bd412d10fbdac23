"""Render every error in one JSON shape with its real status code."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlnode.common.errors import MLNodeError

log = logging.getLogger(__name__)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _mlnode_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MLNodeError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers or None)


#: Errors listed in a 422's `detail`; the rest are only counted (`omitted`), so an answer stays
#: small whatever the body (pydantic reports one error per invalid element).
MAX_REPORTED_ERRORS = 20


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 body: the first error named, at most `MAX_REPORTED_ERRORS` listed, others counted."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _location(tuple(first.get("loc", ())))
    return {
        "error": {
            "type": "RequestValidationError",
            "message": f"{param}: {first.get('msg', 'invalid')}",
            "code": "invalid_request",
            "param": param,
        },
        "detail": [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors[:MAX_REPORTED_ERRORS]
        ],
        "omitted": max(len(errors) - MAX_REPORTED_ERRORS, 0),
    }


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_body(exc.errors()), status_code=422)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (unknown path, wrong method) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    body = {
        "error": {
            "type": "HTTPException",
            "message": message,
            "code": _HTTP_CODES.get(exc.status_code, "http_error"),
            "param": None,
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Typed MLNode errors, validation errors and 404/405 share one body shape."""
    app.add_exception_handler(MLNodeError, _mlnode_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
