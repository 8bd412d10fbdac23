"""HTTP/1.1 answers for the listeners that answer below ASGI: the one status-line writer.

`status_head` is the only place that writes a status line; `JsonAnswer` is an answer the node
writes itself (an error with MLNode's one error body, `/health`), kept as status and payload so
a front end that speaks ASGI sends it without bytes in between.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

from mlnode.common.errors import MLNodeError

_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


def phrase(status: int) -> bytes:
    """The reason phrase of `status`."""
    return _PHRASES.get(status, b"Unknown")


def status_head(status: int, reason: bytes = b"") -> bytes:
    """The status line of an HTTP/1.1 answer (CRLF included); `reason` defaults to the phrase."""
    return b"HTTP/1.1 %d %b\r\n" % (status, reason or phrase(status))


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """A complete JSON answer: its status and its encoded body."""

    status: int
    payload: bytes

    @classmethod
    def of(cls, status: int, body: object) -> JsonAnswer:
        """`body` encoded as JSON."""
        return cls(status, json.dumps(body).encode())

    @classmethod
    def error(cls, error: MLNodeError) -> JsonAnswer:
        """MLNode's error body with the error's status."""
        return cls.of(error.status_code, error.to_body())

    def wire(self, keep_alive: bool = True) -> bytes:
        """The answer as HTTP/1.1 bytes; `keep_alive=False` says the connection closes."""
        connection = b"" if keep_alive else b"connection: close\r\n"
        return b"%bcontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
            status_head(self.status),
            len(self.payload),
            connection,
            self.payload,
        )


def error_response(error: MLNodeError, keep_alive: bool = True) -> bytes:
    """A complete JSON answer with MLNode's error body."""
    return JsonAnswer.error(error).wire(keep_alive)


def json_response(status: int, body: object, keep_alive: bool = True) -> bytes:
    """A complete JSON answer; `keep_alive=False` tells the client the connection closes."""
    return JsonAnswer.of(status, body).wire(keep_alive)
