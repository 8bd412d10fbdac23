"""Pure rules of the inference port: path normalisation and hop-by-hop filtering."""

import pytest

from mlnode.common.errors import BadRequest
from mlnode.infer.headers import HeadFields, connection_tokens
from mlnode.infer.paths import normalise_path, normalise_target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/v1/chat/completions", b"/v1/chat/completions"),
        (b"/v1/../api/v1/state", b"/api/v1/state"),
        (b"//v1/models", b"/v1/models"),
        (b"/v1//models", b"/v1/models"),
        (b"/./v1/./models", b"/v1/models"),
        (b"/%76%31/models", b"/v1/models"),
        (b"/v1/%2e%2e/metrics", b"/metrics"),
        (b"/v1/%2E%2E/%2e/x", b"/x"),
        (b"/../../v1/x", b"/v1/x"),
        (b"/v1/", b"/v1/"),
        (b"/v1/a/..", b"/v1/"),
        (b"/v1/a%20b", b"/v1/a%20b"),
        (b"/v1/a%7e", b"/v1/a~"),
        (b"/v1/a%c3%a9", b"/v1/a%C3%A9"),
        (b"/", b"/"),
    ],
)
def test_paths_are_normalised(raw: bytes, expected: bytes) -> None:
    assert normalise_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1%2f..%2fmetrics",
        b"/v1/%5c..",
        b"/v1/%00",
        b"/v1/a\\b",
        b"/v1/%zz",
        b"/v1/%4",
        b"http://evil/v1/x",
        b"*",
        b"v1/x",
    ],
)
def test_ambiguous_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        normalise_path(raw)


def test_query_is_kept_as_sent() -> None:
    assert normalise_target(b"/v1/../v1/x?a=%2e%2e/../&b") == b"/v1/x?a=%2e%2e/../&b"


def test_headers_named_in_connection_are_not_forwarded() -> None:
    fields = HeadFields()
    fields.add(b"X-Secret", b"s")
    fields.add(b"X-Kept", b"k")
    fields.add(b"Connection", b"keep-alive, x-secret ,X-Other")
    fields.add(b"x-other", b"o")
    fields.add(b"Keep-Alive", b"timeout=5")
    assert fields.block() == b"X-Kept: k\r\n"


def test_content_length_named_in_connection_is_still_forwarded() -> None:
    fields = HeadFields()
    fields.add(b"Connection", b"Content-Length")
    fields.add(b"Content-Length", b"3")
    assert fields.block() == b"Content-Length: 3\r\n" and fields.has_length


def test_connection_tokens() -> None:
    assert connection_tokens(b"close") == {b"close"}
    assert connection_tokens(b" A, ,b,") == {b"a", b"b"}
