"""The request side of validation: what a chat/completions body asks for, and its rewrite (pure).

The network node's validator replays an executor's answer with `enforced_tokens` (newest) or
`enforced_str` (mainnet 2025-08); stock vLLM ignores both. They become the plugin's
`vllm_xargs.mlnode_forced_ids`; tokens that are not decimal ids, and `enforced_str`, are
tokenized by the engine first (`Replay.texts`). When logprobs are asked for, vLLM is told to
spell tokens as ids (`return_tokens_as_token_ids`), which `token_ids` then rewrites.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlnode.common.errors import InvalidRequest, MLNodeError
from mlnode.infer.forcing.protocol import FORCED_IDS_XARG, OUT_OF_VOCAB

#: Fields of the network node that never reach the engine.
GONKA_FIELDS = ("enforced_tokens", "enforced_str", "logprobs_mode")
_MAX_ID = 2**31


class BodyTooLarge(MLNodeError):
    """A request body, or one of its fields, is over the bound the setting named sets."""

    status_code = 413
    code = "payload_too_large"


@dataclass(frozen=True)
class FieldLimits:
    """Bounds on the fields that make the engine work in proportion to their size."""

    max_enforced_str_chars: int = 1 << 20
    max_enforced_tokens: int = 1 << 15
    max_prompt_chars: int = 2 << 20


def text_size(value: object, cap: int) -> int:
    """Characters of every string in `value` (a prompt or messages), counted up to past `cap`."""
    stack, total = [value], 0
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list):
            stack.extend(item)
            total += len(item) if item and not isinstance(item[0], str | list | dict) else 0
        elif isinstance(item, dict):
            stack.extend(item.values())
    return total


def check_sizes(body: dict[str, Any], limits: FieldLimits) -> None:
    """413 naming the field and its setting when `body` asks the engine for too much work."""
    for name in ("prompt", "messages"):
        if text_size(body.get(name), limits.max_prompt_chars) > limits.max_prompt_chars:
            raise BodyTooLarge(
                f"{name} is over {limits.max_prompt_chars} characters "
                "(MLNODE_INFER_MAX_PROMPT_CHARS)",
                param=name,
            )
    enforced = body.get("enforced_str")
    if isinstance(enforced, str) and len(enforced) > limits.max_enforced_str_chars:
        raise BodyTooLarge(
            f"enforced_str is over {limits.max_enforced_str_chars} characters "
            "(MLNODE_INFER_MAX_ENFORCED_STR_CHARS)",
            param="enforced_str",
        )
    tokens = body.get("enforced_tokens")
    tokens = tokens.get("tokens") if isinstance(tokens, dict) else None
    if isinstance(tokens, list) and len(tokens) > limits.max_enforced_tokens:
        raise BodyTooLarge(
            f"enforced_tokens has {len(tokens)} tokens, at most {limits.max_enforced_tokens} "
            "(MLNODE_INFER_MAX_ENFORCED_TOKENS)",
            param="enforced_tokens",
        )


@dataclass
class Replay:
    """What one request asks of the validation layer."""

    body: dict[str, Any]
    #: Ids to force, None entries waiting for the tokenization of `texts` at the same index.
    forced: list[int | None] | None = None
    #: index in `forced` -> text whose first token id goes there (`enforced_str`: index -1).
    texts: dict[int, str] = field(default_factory=dict)
    logprobs_mode: str | None = None
    logprobs: bool = False

    @property
    def forcing(self) -> bool:
        """The request replays forced tokens."""
        return self.forced is not None or -1 in self.texts


def parse_body(raw: bytes) -> dict[str, Any] | None:
    """The JSON object of a body; None when it is not one (the engine then answers it)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def decimal_id(token: object) -> int | None:
    """`int(token)` as gonka's engine reads it; ids outside 0..2^31 become `OUT_OF_VOCAB`."""
    if isinstance(token, bool):
        return None
    if isinstance(token, int):
        value = token
    elif isinstance(token, str):
        try:
            value = int(token)
        except ValueError:
            return None
    else:
        return None
    return value if 0 <= value < _MAX_ID else OUT_OF_VOCAB


def _enforced_tokens(value: object) -> tuple[list[int | None], dict[int, str]]:
    tokens = value.get("tokens") if isinstance(value, dict) else None
    if not isinstance(tokens, list):
        raise InvalidRequest(
            "enforced_tokens must be an object with a list `tokens`", param="enforced_tokens"
        )
    forced: list[int | None] = []
    texts: dict[int, str] = {}
    for i, entry in enumerate(tokens):
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str | int) or isinstance(token, bool):
            raise InvalidRequest(
                f"enforced_tokens.tokens[{i}].token must be a string", param="enforced_tokens"
            )
        forced.append(decimal_id(token))
        if forced[-1] is None:
            texts[i] = str(token)
    return forced, texts


def read_request(body: dict[str, Any], chat: bool, limits: FieldLimits | None = None) -> Replay:
    """What `body` asks for; 422 naming a malformed gonka field, 413 naming an oversized one."""
    check_sizes(body, limits or FieldLimits())
    replay = Replay(body=body)
    if body.get("enforced_tokens") is not None:
        replay.forced, replay.texts = _enforced_tokens(body["enforced_tokens"])
    elif body.get("enforced_str") is not None:
        if not isinstance(body["enforced_str"], str):
            raise InvalidRequest("enforced_str must be a string", param="enforced_str")
        replay.texts = {-1: body["enforced_str"]}
    mode = body.get("logprobs_mode")
    if mode is not None and not isinstance(mode, str):
        raise InvalidRequest("logprobs_mode must be a string", param="logprobs_mode")
    replay.logprobs_mode = mode or None
    logprobs = body.get("logprobs")
    replay.logprobs = logprobs is True if chat else (logprobs is not None and logprobs is not False)
    xargs = body.get("vllm_xargs")
    if replay.forcing and xargs is not None and not isinstance(xargs, dict):
        raise InvalidRequest("vllm_xargs must be an object", param="vllm_xargs")
    return replay


def fill(replay: Replay, tokenized: dict[int, list[int]]) -> list[int]:
    """The forced ids once the texts are tokenized (a text's first id; none: out of vocabulary)."""
    if -1 in replay.texts:
        return list(tokenized.get(-1, []))
    assert replay.forced is not None
    ids: list[int] = []
    for i, token in enumerate(replay.forced):
        if token is None:
            first = tokenized.get(i) or [OUT_OF_VOCAB]
            token = first[0]
        ids.append(token)
    return ids


def engine_body(replay: Replay, ids: list[int] | None) -> bytes:
    """The body the engine gets: forced ids in `vllm_xargs`, ids as tokens, gonka fields gone."""
    body = {k: v for k, v in replay.body.items() if k not in GONKA_FIELDS}
    if ids is not None:
        body["vllm_xargs"] = {**(body.get("vllm_xargs") or {}), FORCED_IDS_XARG: ids}
    if replay.logprobs:
        body["return_tokens_as_token_ids"] = True
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
