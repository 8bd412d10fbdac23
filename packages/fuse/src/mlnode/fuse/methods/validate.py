"""Checks a request's method parameters before a fusion starts, so it never fails mid-way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlnode.fuse.methods.base import FusionMethod, InvalidFusion, ParamDef, ResolvedParams


def resolve(
    method: FusionMethod,
    params: Mapping[str, Any],
    weights: Sequence[float | None],
    has_base: bool,
) -> ResolvedParams:
    """Fill in defaults, check types, ranges and the source count; InvalidFusion otherwise."""
    n = len(weights)
    if method.requires_base and not has_base:
        raise InvalidFusion(f"{method.name} needs a base model", "base")
    if n < method.min_sources:
        raise InvalidFusion(f"{method.name} needs at least {method.min_sources} sources", "sources")
    if method.max_sources is not None and n > method.max_sources:
        raise InvalidFusion(f"{method.name} takes at most {method.max_sources} sources", "sources")
    resolved = ResolvedParams(
        params=_resolve_mapping(method.parameters(), params, method.name, "params"),
        tensor_params=_resolve_weights(method, weights),
    )
    method.check(resolved, n)
    return resolved


def _resolve_mapping(
    defs: Sequence[ParamDef], given: Mapping[str, Any], method: str, where: str
) -> dict[str, Any]:
    known = {d.name: d for d in defs}
    unknown = sorted(set(given) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidFusion(
            f"{method} has no parameter {', '.join(unknown)} (it takes: {allowed})",
            f"{where}.{unknown[0]}",
        )
    out = {}
    for d in defs:
        if d.name in given:
            out[d.name] = d.coerce(given[d.name], f"{where}.{d.name}")
        elif d.required:
            at = "" if where == "params" else f" in {where}"
            raise InvalidFusion(f"{method} needs parameter {d.name}{at}", f"{where}.{d.name}")
        else:
            out[d.name] = d.default
    return out


def _resolve_weights(method: FusionMethod, weights: Sequence[float | None]) -> list[dict[str, Any]]:
    defs = method.tensor_parameters()
    if not defs:
        if any(w is not None for w in weights):
            raise InvalidFusion(f"{method.name} takes no source weights", "sources.weight")
        return [{} for _ in weights]
    out = []
    for i, weight in enumerate(weights):
        given = {} if weight is None else {"weight": weight}
        out.append(_resolve_mapping(defs, given, method.name, f"sources.{i}"))
    if out and sum(t.get("weight", 1.0) for t in out) <= 0:
        raise InvalidFusion("source weights must not all be zero", "sources.weight")
    return out
