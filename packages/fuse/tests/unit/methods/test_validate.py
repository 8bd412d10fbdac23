"""Requests are checked against each method's parameter definitions before a fusion starts."""

from __future__ import annotations

from typing import Any

import pytest

from mlnode.fuse.methods.base import InvalidFusion
from mlnode.fuse.methods.registry import get_method
from mlnode.fuse.methods.validate import resolve


def check(
    method: str, params: dict[str, Any], weights: list[float | None], base: bool = False
) -> dict[str, Any]:
    return dict(resolve(get_method(method), params, weights, base).params)


def test_defaults_are_filled_in() -> None:
    assert check("linear", {}, [None, None]) == {"normalize": True}
    assert check("dare_linear", {"density": 0.3}, [None], base=True) == {
        "lambda": 1.0,
        "density": 0.3,
        "seed": 0,
        "normalize": False,
    }


@pytest.mark.parametrize(
    ("method", "params", "weights", "base", "message"),
    [
        ("linear", {"alpha": 1}, [None], False, "no parameter alpha"),
        ("ties", {}, [None], True, "needs parameter density"),
        ("ties", {"density": 1.5}, [None], True, "<= 1.0"),
        ("ties", {"density": "half"}, [None], True, "must be a float"),
        ("task_arithmetic", {}, [None], False, "needs a base"),
        ("slerp", {"t": 0.5}, [None, None, None], False, "at most 2"),
        ("fedavg", {}, [10.0, None], False, "needs parameter weight in sources.1"),
        ("linear", {}, [0.0, 0.0], False, "not all be zero"),
        ("linear", {}, [-1.0], False, ">= 0.0"),
        ("median", {}, [1.0, None, None], False, "no source weights"),
        ("krum", {"f": 1}, [None] * 4, False, "at least 5 sources"),
        ("multi_krum", {"f": 1, "m": 9}, [None] * 5, False, "cannot keep m=9"),
        ("krum", {"f": 1.5}, [None] * 5, False, "must be a int"),
        ("trimmed_mean", {"trim_ratio": 0.5}, [None] * 2, False, "drops all"),
        ("linear", {"normalize": 1}, [None], False, "must be a bool"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(
    method: str, params: dict[str, Any], weights: list[float | None], base: bool, message: str
) -> None:
    with pytest.raises(InvalidFusion, match=message):
        check(method, params, weights, base)
