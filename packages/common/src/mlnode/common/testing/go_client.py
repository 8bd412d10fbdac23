"""Requests as the network node's Go client puts them on the wire, for replay tests.

Go's `net/http` writes `Host`, `User-Agent: Go-http-client/1.1`, `Content-Length` (with a body),
the caller's headers and `Accept-Encoding: gzip`; the network node's POST helper sets no
Content-Type. Bodies are given as the exact bytes `json.Marshal` produced (struct field order,
no spaces). Each request uses a fresh connection.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any


@dataclass(frozen=True)
class GoAnswer:
    """Status, headers and body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (raises ValueError when it is not)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class GoClient:
    """One base URL of an ML node: `http://host:port{prefix}`, with an optional Bearer token."""

    port: int
    prefix: str = ""
    token: str | None = None
    host: str = "127.0.0.1"
    timeout_s: float = 60.0

    def get(self, path: str) -> GoAnswer:
        """GET without a body."""
        return self.send("GET", path)

    def post(self, path: str, body: bytes | None = None) -> GoAnswer:
        """POST as `SendPostJsonRequest` does: the body, no Content-Type."""
        return self.send("POST", path, body)

    def send(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> GoAnswer:
        """Any request, byte for byte as Go writes it."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines.append("User-Agent: Go-http-client/1.1")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        if self.token is not None:
            lines.append(f"Authorization: Bearer {self.token}")
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines.append("Accept-Encoding: gzip")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        with socket.create_connection((self.host, self.port), timeout=self.timeout_s) as sock:
            sock.sendall(head + (body or b""))
            response = HTTPResponse(sock, method=method)
            response.begin()
            data = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return GoAnswer(response.status, headers, data)
