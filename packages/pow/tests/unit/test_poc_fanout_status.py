"""The PoC v2 status of a node with several engine instances, by gonka's rule."""

from __future__ import annotations

import pytest

from mlnode.pow.fanout.fanout import aggregate_status


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "NO_BACKENDS"),
        (["GENERATING"], "GENERATING"),
        (["GENERATING", "GENERATING"], "GENERATING"),
        (["GENERATING", "IDLE"], "MIXED"),
        (["GENERATING", "UNREACHABLE"], "MIXED"),
        (["GENERATING", "VALIDATING"], "MIXED"),
        (["IDLE", "IDLE"], "IDLE"),
        (["IDLE"], "IDLE"),
        (["VALIDATING", "VALIDATING"], "MIXED"),
        (["UNREACHABLE", "UNREACHABLE"], "MIXED"),
        (["IDLE", "VALIDATING"], "MIXED"),
    ],
)
def test_generating_only_when_all_generate(states: list[str], expected: str) -> None:
    assert aggregate_status(states) == expected
