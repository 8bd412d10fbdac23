"""Every fusion method, listed explicitly; importing this module has no side effects."""

from __future__ import annotations

from mlnode.fuse.methods.base import FusionMethod, MethodName
from mlnode.fuse.methods.linear import FEDAVG, LINEAR
from mlnode.fuse.methods.robust_methods import (
    krum_method,
    median_method,
    multi_krum_method,
    trimmed_mean_method,
)
from mlnode.fuse.methods.slerp import slerp_method
from mlnode.fuse.methods.task_arithmetic import DARE_LINEAR, DARE_TIES, TASK_ARITHMETIC, TIES

METHODS: tuple[FusionMethod, ...] = (
    LINEAR,
    FEDAVG,
    TASK_ARITHMETIC,
    TIES,
    DARE_LINEAR,
    DARE_TIES,
    slerp_method,
    median_method,
    trimmed_mean_method,
    krum_method,
    multi_krum_method,
)

REGISTRY: dict[str, FusionMethod] = {m.name: m for m in METHODS}
assert len(REGISTRY) == len(METHODS), "fusion method names must be unique"
assert set(REGISTRY) == {m.value for m in MethodName}, "every MethodName needs a method"


def get_method(name: str) -> FusionMethod:
    """The method of this name; KeyError when unknown."""
    return REGISTRY[name]
