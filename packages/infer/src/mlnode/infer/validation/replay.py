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

from mlnode.common.errors import InvalidRequest
from mlnode.infer.forcing.protocol import FORCED_IDS_XARG, OUT_OF_VOCAB

#: Fields of the network node that never reach the engine.
GONKA_FIELDS = ("enforced_tokens", "enforced_str", "logprobs_mode")
_MAX_ID = 2**31


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


def read_request(body: dict[str, Any], chat: bool) -> Replay:
    """What `body` asks for; `InvalidRequest` (422) naming a malformed gonka field."""
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
