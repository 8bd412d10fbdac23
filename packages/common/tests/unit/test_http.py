"""The HTTP/1.1 answers both ports write below ASGI."""

from __future__ import annotations

import json

from mlnode.common.errors import BadRequest
from mlnode.common.http import (
    HeaderTooLarge,
    JsonAnswer,
    RequestTimeout,
    error_response,
    json_response,
    phrase,
    status_head,
)


def test_closing_error_answer_is_complete_json_with_connection_close() -> None:
    answer = error_response(HeaderTooLarge("too many lines"), keep_alive=False)

    head, body = answer.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert lines[1:] == [
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    assert json.loads(body)["error"]["code"] == "header_too_large"


def test_kept_alive_answer_has_no_connection_header() -> None:
    answer = error_response(RequestTimeout("slow"))

    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection:" not in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"] == "slow"


def test_json_answer_and_phrases() -> None:
    assert json_response(200, {"status": "ok"}).endswith(b'\r\n\r\n{"status": "ok"}')
    assert error_response(BadRequest("x")).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert phrase(599) == b"Unknown"


def test_status_head_and_json_answer() -> None:
    assert status_head(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_head(502, b"Engine Gone") == b"HTTP/1.1 502 Engine Gone\r\n"
    assert status_head(100) + b"\r\n" == b"HTTP/1.1 100 Continue\r\n\r\n"
    reply = JsonAnswer.error(BadRequest("x", param="p"))
    assert reply.status == 400
    assert json.loads(reply.payload) == {
        "error": {"type": "BadRequest", "message": "x", "code": "bad_request", "param": "p"}
    }
    assert reply.wire() == error_response(BadRequest("x", param="p"))
