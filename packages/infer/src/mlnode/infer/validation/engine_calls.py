"""The two calls the validation layer makes to an engine itself: `/tokenize` and the probe.

Rare (replays with text tokens; once per engine), so a plain one-shot HTTP/1.1 exchange on a
fresh loopback connection is enough, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mlnode.common.errors import EngineFailed
from mlnode.infer.balancer import Backend
from mlnode.infer.forcing.protocol import PROBE_XARG, read_probe

_MAX_ANSWER = 8 << 20


async def post_json(
    backend: Backend, path: str, body: dict[str, Any], timeout_s: float
) -> tuple[int, Any]:
    """POST `body`: (status, decoded JSON or None); `EngineFailed` when unreachable."""
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {backend.host}:{backend.port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + payload
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(backend.host, backend.port)
            try:
                writer.write(request)
                raw = b""
                while (chunk := await reader.read(1 << 16)) and len(raw) <= _MAX_ANSWER:
                    raw += chunk
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise EngineFailed(f"engine {backend.key}: {path} failed: {exc!r}") from exc
    if len(raw) > _MAX_ANSWER:
        raise EngineFailed(f"engine {backend.key}: answer to {path} over {_MAX_ANSWER} bytes")
    head, _, content = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise EngineFailed(f"engine {backend.key}: malformed answer to {path}") from exc
    if b"transfer-encoding: chunked" in head.lower():
        content = _dechunk(content)
    try:
        return status, json.loads(content)
    except ValueError:
        return status, None


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


async def tokenize(backend: Backend, model: object, text: str, timeout_s: float) -> list[int]:
    """The engine's ids of `text` without special tokens (as gonka's engine encodes it)."""
    body = {"prompt": text, "add_special_tokens": False}
    if isinstance(model, str):
        body["model"] = model
    status, answer = await post_json(backend, "/tokenize", body, timeout_s)
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(tokens, list):
        raise EngineFailed(f"engine {backend.key}: /tokenize answered {status}")
    return [int(t) for t in tokens]


async def probe(backend: Backend, timeout_s: float) -> tuple[bool, str]:
    """Whether the engine's forcing plugin is loaded and passed its self-check, and why not."""
    body = {"prompt": [0], "max_tokens": 1, "vllm_xargs": {PROBE_XARG: 1}}
    status, answer = await post_json(backend, "/v1/completions", body, timeout_s)
    if 200 <= status < 300:
        return False, "the engine has no forcing plugin (it ignored the probe)"
    error = answer.get("error") if isinstance(answer, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    found = read_probe(message) if isinstance(message, str) else None
    if found is None:
        return False, f"the forcing probe got {status}: {str(message)[:200]}"
    return found
