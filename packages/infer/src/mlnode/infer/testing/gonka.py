"""The network node's side of inference validation, ported for tests and benchmarks.

`replay_body` builds the validator's replay request from an executor's answer
(`GetEnforcedTokens`); `compare` scores a replay as the newest validator does (common/validation/
validation.go: token check, then the per-position relative logprob distance over the replay's top
entries, missing executor entries extrapolated, divided per position by the replay's width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Position:
    """One output position: the chosen token, its logprob, the top entries."""

    token: str
    logprob: float
    top: dict[str, float]


def positions(content: list[dict[str, Any]]) -> list[Position]:
    """`choices[0].logprobs.content` (concatenated over chunks when streamed) as positions."""
    return [
        Position(e["token"], e["logprob"], {t["token"]: t["logprob"] for t in e["top_logprobs"]})
        for e in content
    ]


def replay_body(stored: dict[str, Any], content: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The validator's replay of `stored` (the executor request) with the executor's tokens."""
    body = {k: v for k, v in stored.items() if k != "stream_options"}
    body.update(stream=False, skip_special_tokens=False, seed=seed)
    body["enforced_tokens"] = {
        "tokens": [
            {"token": e["token"], "top_tokens": [t["token"] for t in e["top_logprobs"]]}
            for e in content
        ]
    }
    return body


@dataclass(frozen=True)
class Verdict:
    """The validator's reading of a replay."""

    reason: str  # "ok", "different_length", "different_tokens"
    similarity: float


def _distance(replay: Position, original: Position) -> float:
    values = sorted(original.top.values())
    m1 = values[0] if values else 0.0
    m2 = values[1] if len(values) > 1 else m1 - 100
    missing = m1 - (m2 - m1)
    total = 0.0
    for token, lp in replay.top.items():
        other = original.top.get(token, missing)
        d = abs(lp - other) / (1e-6 + abs(lp) + abs(other)) / 2
        total += d if math.isfinite(d) else 0.5
    return total / max(len(replay.top), 1)


def compare(original: list[Position], replay: list[Position]) -> Verdict:
    """Score `replay` against the executor's `original`."""
    if len(replay) < len(original):
        return Verdict("different_length", 0.0)
    if any(r.token != o.token for r, o in zip(replay, original, strict=False)):
        return Verdict("different_tokens", 0.0)
    distance = sum(_distance(r, o) for r, o in zip(replay, original, strict=False))
    return Verdict("ok", 1 - distance / max(100, len(original)))
