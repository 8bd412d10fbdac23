"""The network node's `/{version}` URL prefix (`/v3.0.8/api/v1/state`), stripped before routing.

The newest network node puts the chain's ML-node version in front of every path; gonka's
deployments strip it with nginx. An MLNode that strips it itself needs no nginx. The pattern is a
setting (`MLNODE_VERSION_PREFIX_PATTERN`); an empty pattern turns stripping off.
"""

from __future__ import annotations

import re

#: `v3.0.8`, `v3.0.14-rc1`, and image tags with several suffixes such as `v3.1.0-vllm-0.28.0`.
DEFAULT_PATTERN = r"v\d+\.\d+\.\d+(?:-[A-Za-z0-9][A-Za-z0-9.]*)*"


class VersionPrefix:
    """Strips one leading `/{version}` segment matching the pattern; other paths pass unchanged."""

    __slots__ = ("_bytes", "_lead", "_text")

    def __init__(self, pattern: str = DEFAULT_PATTERN) -> None:
        # A literal first character lets most paths skip the regular expression.
        self._lead = "/" + pattern[0] if pattern[:1].isalnum() else "/"
        if pattern:
            anchored = rf"/(?:{pattern})(?=[/?]|$)"
            self._text: re.Pattern[str] | None = re.compile(anchored)
            self._bytes: re.Pattern[bytes] | None = re.compile(anchored.encode())
        else:
            self._text = self._bytes = None

    def strip_path(self, path: str) -> str:
        """`/v3.0.8/api/v1/state` → `/api/v1/state`; `/v3.0.8` → `/`."""
        if self._text is None or not path.startswith(self._lead):
            return path
        match = self._text.match(path)
        return path if match is None else path[match.end() :] or "/"

    def strip_target(self, target: bytes) -> bytes:
        """The same for a raw request target, query string included."""
        if self._bytes is None or not target.startswith(self._lead.encode()):
            return target
        match = self._bytes.match(target)
        if match is None:
            return target
        rest = target[match.end() :]
        return rest if rest.startswith(b"/") else b"/" + rest
