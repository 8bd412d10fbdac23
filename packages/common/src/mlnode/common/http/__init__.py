"""HTTP/1.1 pieces both ports share: request-head limits and answers written as bytes."""

from mlnode.common.http.answers import error_response, json_response, phrase
from mlnode.common.http.limits import HeaderTooLarge, HttpLimits, RequestTimeout

__all__ = [
    "HeaderTooLarge",
    "HttpLimits",
    "RequestTimeout",
    "error_response",
    "json_response",
    "phrase",
]
