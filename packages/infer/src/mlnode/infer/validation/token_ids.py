"""Decimal token ids in answers (pure): vLLM's `token_id:N` becomes `N`, and `bytes` spell it.

With `return_tokens_as_token_ids` vLLM names every logprob token `token_id:N` (its top entries'
`bytes` spell that too; generate/base/serving.py `format_token_id_placeholder`). Validators want
`N` (`HasNonNumericTokens`), as gonka's engine writes it. A chosen token's own `bytes` keep the
decoded text. Chat answers carry `choices[].logprobs.content[]`, completions answers
`choices[].logprobs.tokens` and `top_logprobs` maps; streamed chunks have the same shapes.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "token_id:"
_PREFIX_BYTES = PREFIX.encode()

# Chat answers are rewritten on their bytes: parsing and re-serialising costs about 1 ms per 16
# tokens. vLLM writes compact JSON (pydantic), where `"token":"` can only open the value of an
# object key `token` (in a string the quotes would be escaped), which only logprob entries have,
# and a `bytes` array spelling `token_id:` is a top entry's (or a placeholder) spelling of an id.
_CHAT_TOKEN = (b'"token":"token_id:', b'"token":"')
_CHAT_BYTES = (b'"bytes":[116,111,107,101,110,95,105,100,58,', b'"bytes":[')


def decimal(token: object) -> object:
    """`"token_id:N"` -> `"N"`; anything else unchanged."""
    if isinstance(token, str) and token.startswith(PREFIX) and token[len(PREFIX) :].isdecimal():
        return token[len(PREFIX) :]
    return token


def _chat_entry(entry: dict[str, Any], top: bool) -> bool:
    token = entry.get("token")
    new = decimal(token)
    if new is token:
        return False
    entry["token"] = new
    assert isinstance(token, str) and isinstance(new, str)
    # A chosen token's bytes are its text; only where vLLM spelled the placeholder do they change.
    if top or entry.get("bytes") == list(token.encode()):
        entry["bytes"] = list(new.encode())
    return True


def _chat_logprobs(logprobs: dict[str, Any]) -> bool:
    changed = False
    for entry in logprobs.get("content") or ():
        if isinstance(entry, dict):
            changed |= _chat_entry(entry, top=False)
            for alt in entry.get("top_logprobs") or ():
                if isinstance(alt, dict):
                    changed |= _chat_entry(alt, top=True)
    return changed


def _completion_logprobs(logprobs: dict[str, Any]) -> bool:
    before = (logprobs.get("tokens"), logprobs.get("top_logprobs"))
    tokens = logprobs.get("tokens")
    if isinstance(tokens, list):
        logprobs["tokens"] = [decimal(t) for t in tokens]
    tops = logprobs.get("top_logprobs")
    if isinstance(tops, list):
        logprobs["top_logprobs"] = [
            {str(decimal(k)): v for k, v in top.items()} if isinstance(top, dict) else top
            for top in tops
        ]
    return before != (logprobs.get("tokens"), logprobs.get("top_logprobs"))


def rewrite_payload(payload: object) -> bool:
    """Rewrite one answer or stream chunk in place; whether anything changed."""
    if not isinstance(payload, dict):
        return False
    changed = False
    for choice in payload.get("choices") or ():
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        if not isinstance(logprobs, dict):
            continue
        if "content" in logprobs:
            changed |= _chat_logprobs(logprobs)
        else:
            changed |= _completion_logprobs(logprobs)
    return changed


def _compact_chat(data: bytes) -> bytes | None:
    """`data` rewritten on its bytes, or None when it holds no compact `"token":"token_id:`."""
    out = data.replace(*_CHAT_TOKEN)
    if len(out) == len(data):
        return None
    return out.replace(*_CHAT_BYTES)


def rewrite_chat(data: bytes) -> bytes:
    """A chat answer or chunk with decimal ids, rewritten on its bytes (see `_CHAT_TOKEN`)."""
    if _PREFIX_BYTES not in data:
        return data
    out = _compact_chat(data)
    return rewrite_json(data) if out is None else out


def rewrite_json(data: bytes) -> bytes:
    """A JSON answer with decimal ids; bytes that are not JSON, or hold no ids, stay as they are."""
    if _PREFIX_BYTES not in data:
        return data
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data
    if not rewrite_payload(payload):
        return data
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _open_pattern(data: bytes) -> int:
    """Length of the longest tail of `data` that could begin a `_CHAT_TOKEN`/`_CHAT_BYTES` match."""
    for size in range(min(len(_CHAT_BYTES[0]) - 1, len(data)), 0, -1):
        tail = data[-size:]
        if _CHAT_BYTES[0].startswith(tail) or _CHAT_TOKEN[0].startswith(tail):
            return size
    return 0


class ChatAnswerRewriter:
    """A JSON chat answer rewritten as it arrives, not buffered whole.

    Bytes are held until the first compact `"token":"token_id:` shows vLLM's compact JSON (the
    byte rewrite is then exact); from there each piece leaves rewritten, but for a tail that
    could begin a pattern. An answer never shown to be compact is rewritten whole at its end.
    """

    __slots__ = ("_compact", "_held")

    def __init__(self) -> None:
        self._held = bytearray()
        self._compact = False

    def feed(self, data: bytes) -> bytes:
        """What of the answer can go to the client now."""
        start = max(len(self._held) - len(_CHAT_TOKEN[0]), 0)
        self._held += data
        if not self._compact:
            if self._held.find(_CHAT_TOKEN[0], start) < 0:
                return b""
            self._compact = True
        held = bytes(self._held)
        cut = len(held) - _open_pattern(held)
        self._held = bytearray(held[cut:])
        return held[:cut].replace(*_CHAT_TOKEN).replace(*_CHAT_BYTES)

    def close(self) -> bytes:
        """The rest of the answer."""
        held, self._held = bytes(self._held), bytearray()
        if self._compact:
            return held.replace(*_CHAT_TOKEN).replace(*_CHAT_BYTES)
        return rewrite_chat(held)


class SseRewriter:
    """Rewrites the `data:` lines of a server-sent-event stream as they arrive.

    Every complete line leaves at once, so a stream stays token by token; a line split across
    reads waits for its end.
    """

    __slots__ = ("_partial", "_rewrite")

    def __init__(self, chat: bool = False) -> None:
        self._partial = b""
        self._rewrite = rewrite_chat if chat else rewrite_json

    def feed(self, data: bytes) -> bytes:
        """Complete lines of `data` (with what was held back), rewritten."""
        if self._partial:
            data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if not cut:
            return b""
        lines = data[:cut]
        if _PREFIX_BYTES not in lines:
            return lines
        if self._rewrite is rewrite_chat and (out := _compact_chat(lines)) is not None:
            return out
        return b"".join(self._line(line) for line in lines.splitlines(keepends=True))

    def close(self) -> bytes:
        """What is left at the end of the stream."""
        rest, self._partial = self._partial, b""
        return self._line(rest) if rest else b""

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:") or _PREFIX_BYTES not in line:
            return line
        body = line[5:]
        stripped = body.rstrip(b"\r\n")
        end = body[len(stripped) :]
        lead = b" " if stripped.startswith(b" ") else b""
        return b"data:" + lead + self._rewrite(stripped[len(lead) :]) + end
