"""The request target as the inference port judges and forwards it (RFC 3986 normalisation).

The `/v1/` check must see the path the engine will route on: percent-encoded unreserved
characters are decoded (`%2e` is a dot), dot segments are removed and empty segments collapsed,
so `/v1/../metrics`, `//v1/x` and `/%76%31/../x` cannot pass for what they are not. Encoded
slashes, backslashes and NULs are refused: servers disagree on them.
"""

from __future__ import annotations

import re

from mlnode.common.errors import BadRequest

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_REFUSED = frozenset({0x2F, 0x5C, 0x00})


def _decode_unreserved(path: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        value = int(match.group(1), 16)
        if value in _REFUSED:
            raise BadRequest(f"the path may not encode {match.group(0).decode()}")
        return bytes([value]) if value in _UNRESERVED else b"%" + match.group(1).upper()

    if b"%" in path and re.search(rb"%(?![0-9A-Fa-f]{2})", path):
        raise BadRequest("the path has a malformed percent-escape")
    return _ESCAPE.sub(one, path)


def normalise_path(path: bytes) -> bytes:
    """`path` with escapes of unreserved characters decoded, dot and empty segments removed."""
    if not path.startswith(b"/"):
        raise BadRequest("the request target must be an absolute path (origin-form)")
    if b"\\" in path or b"\x00" in path:
        raise BadRequest("the path may not contain backslashes or NULs")
    segments: list[bytes] = []
    parts = _decode_unreserved(path).split(b"/")
    for part in parts[1:]:
        if part in (b"", b"."):
            continue
        if part == b"..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = parts[-1] in (b"", b".", b"..") and bool(segments)
    return b"/" + b"/".join(segments) + (b"/" if trailing else b"")


def normalise_target(target: bytes) -> bytes:
    """The request target with its path normalised and its query kept as sent."""
    path, sep, query = target.partition(b"?")
    return normalise_path(path) + sep + query
