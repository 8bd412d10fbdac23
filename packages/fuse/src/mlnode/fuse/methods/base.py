"""The fusion method interface, its parameter definitions and request validation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch


class MethodName(StrEnum):
    """The methods a fusion request may name."""

    LINEAR = "linear"
    FEDAVG = "fedavg"
    TASK_ARITHMETIC = "task_arithmetic"
    TIES = "ties"
    DARE_LINEAR = "dare_linear"
    DARE_TIES = "dare_ties"
    SLERP = "slerp"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"
    KRUM = "krum"
    MULTI_KRUM = "multi_krum"


class InvalidFusion(ValueError):
    """A fusion request that cannot run (unknown parameter, wrong value or source count)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ParamDef:
    """One parameter of a method: its type, whether it is required, its default and range."""

    name: str
    kind: type = float
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    def coerce(self, value: Any, where: str) -> Any:
        """The value as `kind`, checked against the range; InvalidFusion otherwise."""
        ok = isinstance(value, bool) if self.kind is bool else _is_number(value, self.kind)
        if not ok:
            raise InvalidFusion(f"{where} must be a {self.kind.__name__}, got {value!r}", where)
        value = self.kind(value)
        if self.minimum is not None and value < self.minimum:
            raise InvalidFusion(f"{where} must be >= {self.minimum}, got {value}", where)
        if self.maximum is not None and value > self.maximum:
            raise InvalidFusion(f"{where} must be <= {self.maximum}, got {value}", where)
        return value


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)


WEIGHT = ParamDef("weight", default=1.0, minimum=0.0, description="Weight of the source.")


@dataclass(frozen=True)
class ResolvedParams:
    """A request's parameters after validation: defaults filled in, one weight per source."""

    params: Mapping[str, Any]
    tensor_params: Sequence[Mapping[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class MergeInputs:
    """One tensor of every source to merge, with the base's, the parameters and the tensor's name.

    `name` seeds random methods, so that a fusion is reproducible. `tensors` and `base` are
    float32 (`tensors` in their stored dtype when the method `promotes_inputs`); read each item
    of `tensors` once (the executor converts on each read, so that only the tensors in use take
    float32 space).
    """

    tensors: Sequence[torch.Tensor]
    base: torch.Tensor | None
    params: Mapping[str, Any]
    tensor_params: Sequence[Mapping[str, Any]]
    name: str


class FusionMethod(ABC):
    """A way to merge the same tensor of several models into one (float32 in, float32 out)."""

    name: str
    pretty_name: str
    reference_url: str
    requires_base: bool = False
    #: True when `merge` reads the sources in their stored dtype, promoting them to float32 itself
    #: (in-place ops on a float32 accumulator), which saves a float32 copy of every source.
    promotes_inputs: bool = False
    min_sources: int = 1
    max_sources: int | None = None

    def parameters(self) -> list[ParamDef]:
        """Parameters of the whole fusion."""
        return []

    def tensor_parameters(self) -> list[ParamDef]:
        """Parameters given per source (the request's `weight`)."""
        return [WEIGHT]

    def check(self, resolved: ResolvedParams, num_sources: int) -> None:  # noqa: B027
        """Constraints across parameters and the source count; raise InvalidFusion."""

    @abstractmethod
    def merge(self, inputs: MergeInputs) -> torch.Tensor:
        """Merge one tensor of every source into one (see MergeInputs)."""


MergeFn = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]


class FunctionMethod(FusionMethod):
    """A method made of a function of the stacked sources and the parameters."""

    def __init__(
        self,
        fn: MergeFn,
        name: str,
        pretty_name: str,
        reference_url: str,
        parameters: Sequence[ParamDef],
        min_sources: int,
        max_sources: int | None,
        check: Callable[[Mapping[str, Any], int], None] | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.pretty_name = pretty_name
        self.reference_url = reference_url
        self._parameters = list(parameters)
        self.min_sources = min_sources
        self.max_sources = max_sources
        self._check = check

    def parameters(self) -> list[ParamDef]:
        """The parameters given to the decorator."""
        return list(self._parameters)

    def tensor_parameters(self) -> list[ParamDef]:
        """None: these methods treat every source alike."""
        return []

    def check(self, resolved: ResolvedParams, num_sources: int) -> None:
        """The decorator's check, if any."""
        if self._check is not None:
            self._check(resolved.params, num_sources)

    def merge(self, inputs: MergeInputs) -> torch.Tensor:
        """Stack the sources and apply the function."""
        return self.fn(torch.stack(list(inputs.tensors)), inputs.params)


def fusion_method(
    name: str,
    pretty_name: str,
    reference_url: str,
    parameters: Sequence[ParamDef] = (),
    min_sources: int = 1,
    max_sources: int | None = None,
    check: Callable[[Mapping[str, Any], int], None] | None = None,
) -> Callable[[MergeFn], FunctionMethod]:
    """Turn `fn(stack, params) -> tensor` into a `FusionMethod`."""

    def wrap(fn: MergeFn) -> FunctionMethod:
        return FunctionMethod(
            fn, name, pretty_name, reference_url, parameters, min_sources, max_sources, check
        )

    return wrap
