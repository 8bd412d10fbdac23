"""Spherical linear interpolation of two models, tensor by tensor.

Reference: Shoemake, "Animating rotation with quaternion curves" (SIGGRAPH 1985). Tensors that
are (nearly) parallel fall back to linear interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from mlnode.fuse.methods.base import ParamDef, fusion_method

#: Above this |cos| the angle is too small for a stable spherical formula.
PARALLEL_COS = 1.0 - 1e-6


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Interpolate from `a` (t=0) to `b` (t=1) along the great circle between their directions."""
    norm_a = a.norm()
    norm_b = b.norm()
    if norm_a == 0 or norm_b == 0:
        return torch.lerp(a, b, t)
    cos = float((a.reshape(-1) @ b.reshape(-1)) / (norm_a * norm_b))
    cos = max(-1.0, min(1.0, cos))
    if abs(cos) > PARALLEL_COS:
        return torch.lerp(a, b, t)
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    return a * (math.sin((1 - t) * theta) / sin_theta) + b * (math.sin(t * theta) / sin_theta)


@fusion_method(
    name="slerp",
    pretty_name="SLERP",
    reference_url="https://dl.acm.org/doi/10.1145/325165.325242",
    parameters=[ParamDef("t", required=True, minimum=0.0, maximum=1.0, description="0 = first.")],
    min_sources=2,
    max_sources=2,
)
def slerp_method(stack: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """SLERP between the two sources."""
    return slerp(stack[0], stack[1], float(params["t"]))
