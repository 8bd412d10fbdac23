"""HTTP/1.1 pieces both ports share: request-head limits and answers written as bytes."""

from mlnode.common.http.answers import (
    JsonAnswer,
    error_response,
    json_response,
    phrase,
    status_head,
)
from mlnode.common.http.limits import HeaderTooLarge, HttpLimits, RequestTimeout

__all__ = [
    "HeaderTooLarge",
    "HttpLimits",
    "JsonAnswer",
    "RequestTimeout",
    "error_response",
    "json_response",
    "phrase",
    "status_head",
]
