"""The robust aggregators of `mlnode.common.robust` as fusion methods.

Krum and Multi-Krum select sources tensor by tensor (block-wise), which keeps fusion streaming.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mlnode.common import robust
from mlnode.fuse.methods.base import InvalidFusion, ParamDef, fusion_method

KRUM_URL = "https://papers.nips.cc/paper/6617"
YIN_URL = "https://arxiv.org/abs/1803.01498"


@fusion_method(name="median", pretty_name="Median", reference_url=YIN_URL)
def median_method(stack: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """Coordinate-wise median."""
    return robust.median(stack)


def _check_trim(params: Mapping[str, Any], n: int) -> None:
    if n - 2 * robust.trimmed_count(n, params["trim_ratio"]) < 1:
        raise InvalidFusion(
            f"trim_ratio {params['trim_ratio']} drops all of {n} sources", "params.trim_ratio"
        )


@fusion_method(
    name="trimmed_mean",
    pretty_name="Trimmed mean",
    reference_url=YIN_URL,
    parameters=[
        ParamDef("trim_ratio", default=0.1, minimum=0.0, maximum=0.5, description="Per end.")
    ],
    check=_check_trim,
)
def trimmed_mean_method(stack: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """Coordinate-wise mean without the extremes."""
    return robust.trimmed_mean(stack, params["trim_ratio"])


def _check_krum(params: Mapping[str, Any], n: int) -> None:
    f = params["f"]
    if n < 2 * f + 3:
        raise InvalidFusion(f"krum with f={f} needs at least {2 * f + 3} sources, got {n}", "f")
    keep = params.get("m") or n - f
    if keep > n:
        raise InvalidFusion(f"multi_krum cannot keep m={keep} of {n} sources", "params.m")


F_PARAM = ParamDef("f", int, required=True, minimum=0, description="Sources that may be bad.")


@fusion_method(
    name="krum",
    pretty_name="Krum",
    reference_url=KRUM_URL,
    parameters=[F_PARAM],
    min_sources=3,
    check=_check_krum,
)
def krum_method(stack: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """The one source closest to its neighbours."""
    return robust.krum(stack, params["f"], to_keep=1)


@fusion_method(
    name="multi_krum",
    pretty_name="Multi-Krum",
    reference_url=KRUM_URL,
    parameters=[F_PARAM, ParamDef("m", int, minimum=1, description="Kept; default n - f.")],
    min_sources=3,
    check=_check_krum,
)
def multi_krum_method(stack: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """Mean of the `m` sources with the best Krum scores."""
    keep = params["m"] or stack.shape[0] - params["f"]
    return robust.krum(stack, params["f"], to_keep=keep)
