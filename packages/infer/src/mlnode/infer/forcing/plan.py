"""Which id to force at each output position (pure; shared by both model runners)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlnode.infer.forcing.protocol import FORCED_IDS_XARG


def forced_ids(extra_args: dict[str, Any] | None) -> list[int] | None:
    """The ids a request asks to force, or None; `ValueError` for a malformed value."""
    if not extra_args or FORCED_IDS_XARG not in extra_args:
        return None
    ids = extra_args[FORCED_IDS_XARG]
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise ValueError(f"vllm_xargs.{FORCED_IDS_XARG} must be a list of integers")
    return ids


def build_plan(ids: Sequence[int], vocab_size: int, eos: int | None) -> list[int]:
    """The forced run: `ids` up to the first one outside the vocabulary, then EOS.

    As gonka's engine does, EOS follows the run unless it already ends with it; an id outside
    the vocabulary ends the run there, so a tampered replay diverges instead of failing.
    """
    plan: list[int] = []
    for token in ids:
        if not 0 <= token < vocab_size:
            break
        plan.append(token)
    if eos is not None and (not plan or plan[-1] != eos):
        plan.append(eos)
    return plan


def target(plan: Sequence[int], position: int) -> int | None:
    """The id forced at output `position`; the last one repeats once the run is exhausted."""
    if not plan or position < 0:
        return None
    return plan[position] if position < len(plan) else plan[-1]
