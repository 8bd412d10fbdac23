"""The two calls the validation layer makes to an engine itself: `/tokenize` and the probe.

Both go through the node's one engine client (`EngineClient`): a deadline for the whole call,
the answer bounded, failures raised as `EngineFailed`.
"""

from __future__ import annotations

from mlnode.common.engines import EngineClient
from mlnode.common.errors import EngineFailed
from mlnode.infer.balancer import Backend
from mlnode.infer.forcing.protocol import PROBE_XARG, read_probe

_MAX_ANSWER = 8 << 20


async def tokenize(
    client: EngineClient, backend: Backend, model: object, text: str, timeout_s: float
) -> list[int]:
    """The engine's ids of `text` without special tokens (as gonka's engine encodes it)."""
    body = {"prompt": text, "add_special_tokens": False}
    if isinstance(model, str):
        body["model"] = model
    answer = await client.post(backend, "/tokenize", body, timeout_s, _MAX_ANSWER)
    found = answer.json_or_none()
    tokens = found.get("tokens") if isinstance(found, dict) else None
    if answer.status_code != 200 or not isinstance(tokens, list):
        raise EngineFailed(f"engine {backend.key}: /tokenize answered {answer.status_code}")
    return [int(t) for t in tokens]


async def probe(client: EngineClient, backend: Backend, timeout_s: float) -> tuple[bool, str]:
    """Whether the engine's forcing plugin is loaded and passed its self-check, and why not."""
    body = {"prompt": [0], "max_tokens": 1, "vllm_xargs": {PROBE_XARG: 1}}
    answer = await client.post(backend, "/v1/completions", body, timeout_s, _MAX_ANSWER)
    if 200 <= answer.status_code < 300:
        return False, "the engine has no forcing plugin (it ignored the probe)"
    found = answer.json_or_none()
    error = found.get("error") if isinstance(found, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    verdict = read_probe(message) if isinstance(message, str) else None
    if verdict is None:
        return False, f"the forcing probe got {answer.status_code}: {str(message)[:200]}"
    return verdict
