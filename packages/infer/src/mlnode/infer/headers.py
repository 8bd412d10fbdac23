"""`HeadFields`: a message's header lines as the proxy forwards them, read once as they arrive."""

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
        "event_stream",
        "expect_continue",
        "has_length",
        "lines",
    )

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.has_length = False
        self.chunked = False
        self.expect_continue = False
        self.event_stream = False
        self.authorization: bytes | None = None

    def add(self, name: bytes, value: bytes) -> None:
        """One header as the parser reports it."""
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"transfer-encoding":
                self.chunked = True
            elif lname == b"expect":
                self.expect_continue = value.lower() == b"100-continue"
            return
        if lname == b"content-length":
            self.has_length = True
        elif lname == b"content-type":
            self.event_stream = value.startswith(b"text/event-stream")
        elif lname == b"authorization":
            self.authorization = value
        self.lines.append(b"%b: %b\r\n" % (name, value))

    def block(self) -> bytes:
        """The forwardable lines, each ending in CRLF."""
        return b"".join(self.lines)
