"""`HeadFields`: a message's header lines as the proxy forwards them, read once as they arrive.

Hop-by-hop headers (RFC 9110 section 7.6.1) stay on their hop: the fixed list below and every
header the message's own `Connection` header names (`Connection: close, X-Secret`).
"""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"expect",
    }
)


class HeadFields:
    """Forwardable header lines; hop-by-hop ones are kept out, those that steer framing noted."""

    __slots__ = (
        "authorization",
        "chunked",
        "connection_names",
        "content_length",
        "event_stream",
        "expect_continue",
        "has_length",
        "lines",
    )

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.connection_names: set[bytes] = set()
        self.has_length = False
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.event_stream = False
        self.authorization: bytes | None = None

    def add(self, name: bytes, value: bytes) -> None:
        """One header as the parser reports it."""
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                self.connection_names.update(connection_tokens(value))
            elif lname == b"transfer-encoding":
                self.chunked = True
            elif lname == b"expect":
                self.expect_continue = value.lower() == b"100-continue"
            return
        if lname == b"content-length":
            self.has_length = True
            self.content_length = int(value) if value.strip().isdigit() else None
        elif lname == b"content-type":
            self.event_stream = value.startswith(b"text/event-stream")
        elif lname == b"authorization":
            self.authorization = value
        self.lines.append(b"%b: %b\r\n" % (name, value))

    def block(self) -> bytes:
        """The forwardable lines, each ending in CRLF."""
        if not self.connection_names:
            return b"".join(self.lines)
        return b"".join(line for line in self.lines if not self._named(line))

    def pairs(self) -> list[tuple[bytes, bytes]]:
        """The forwardable headers as ASGI carries them: (lower-case name, value)."""
        out = []
        for line in self.lines:
            name, _, value = line[:-2].partition(b": ")
            lname = name.lower()
            if lname not in self.connection_names:
                out.append((lname, value))
        return out

    def _named(self, line: bytes) -> bool:
        return line.split(b":", 1)[0].lower() in self.connection_names


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a `Connection` value (lower case; `close`, `keep-alive` too).

    `Content-Length` is never dropped: the body is forwarded as framed, and a length removed
    from it would let the next hop read the body as another request.
    """
    tokens = {token.strip().lower() for token in value.split(b",")}
    return tokens - {b"", b"content-length"}
