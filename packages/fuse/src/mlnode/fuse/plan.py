"""The fusion plan: one task per output tensor, checked against every model before anything runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

import torch

from mlnode.common.transport.api import TensorMeta
from mlnode.fuse.io.source import TensorSource
from mlnode.fuse.io.st_format import tensor_nbytes

#: How many differences an incompatibility message lists before "and N more".
MAX_LISTED = 12


class Action(StrEnum):
    """What the executor does for one tensor."""

    MERGE = "merge"
    COPY = "copy"


class IncompatibleModels(ValueError):
    """The models do not have the same tensor names and shapes."""


@dataclass(frozen=True)
class TensorTask:
    """One output tensor: merge it, or copy it from the reference model."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    action: Action

    @property
    def nbytes(self) -> int:
        """Bytes of the output tensor."""
        return tensor_nbytes(self.dtype, self.shape)


@dataclass(frozen=True)
class FusionPlan:
    """Every output tensor in writing order."""

    tasks: list[TensorTask]

    @property
    def total_bytes(self) -> int:
        """Bytes of the output checkpoint's tensors."""
        return sum(t.nbytes for t in self.tasks)

    def specs(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, shape) for the writer."""
        return [(t.name, t.dtype, t.shape) for t in self.tasks]


def check_compatible(models: Sequence[TensorSource]) -> dict[str, TensorMeta]:
    """The common tensors of the models; IncompatibleModels lists names and shapes that differ."""
    described = [m.describe() for m in models]
    reference = described[0]
    problems: list[str] = []
    for model, desc in zip(models[1:], described[1:], strict=True):
        missing = sorted(set(reference) - set(desc))
        extra = sorted(set(desc) - set(reference))
        problems += [f"{n} missing from {model.label}" for n in missing]
        problems += [f"{n} only in {model.label}" for n in extra]
        problems += [
            f"{n}: shape {list(reference[n].shape)} in {models[0].label}, "
            f"{list(desc[n].shape)} in {model.label}"
            for n in sorted(set(reference) & set(desc))
            if reference[n].shape != desc[n].shape
        ]
    if problems:
        listed = problems[:MAX_LISTED]
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise IncompatibleModels("models differ: " + "; ".join(listed) + more)
    return reference


def build_plan(
    models: Sequence[TensorSource], keep_base: Sequence[str], out_dtype: torch.dtype | None
) -> FusionPlan:
    """Tasks in the reference model's order; `models[0]` is the reference (the base, if any).

    Floating tensors matching a `keep_base` pattern are copied from the reference; tensors that
    are not floating point (step counters, masks) are copied unchanged.
    """
    reference = check_compatible(models)
    tasks = []
    for name, meta in reference.items():
        floating = meta.dtype.is_floating_point
        copy = not floating or any(fnmatchcase(name, p) for p in keep_base)
        dtype = out_dtype if floating and out_dtype is not None else meta.dtype
        tasks.append(TensorTask(name, meta.shape, dtype, Action.COPY if copy else Action.MERGE))
    return FusionPlan(tasks)
