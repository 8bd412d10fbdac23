"""Checks on everything a peer sends before it is used; each returns why it is refused, or None.

A refused pseudo-gradient or state only leaves that peer out (of the round, or of the holders
tried); it never fails the job. What counts as right comes from this worker's own model: the
names, shapes and dtypes of its tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mlnode.train.diloco import sparse
from mlnode.train.diloco.math import Compression, Tensors, decompress

#: name -> (shape, dtype) of every tensor of the model.
Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]

DIGEST_BYTES = 32


def layout_of(tensors: Mapping[str, torch.Tensor]) -> Layout:
    """The layout a peer's tensors must match."""
    return {n: (tuple(t.shape), t.dtype) for n, t in tensors.items()}


def _wire_parts(
    mode: Compression, shape: tuple[int, ...], spec: sparse.SparseSpec
) -> dict[str, tuple[tuple[int, ...] | None, torch.dtype]]:
    if mode is Compression.SPARSELOCO:
        parts: dict[str, tuple[tuple[int, ...] | None, torch.dtype]] = {"idx": (None, torch.uint8)}
        return parts | dict(sparse.wire_shapes(int(torch.Size(shape).numel()), spec))
    if mode is Compression.INT8:
        return {"q": (shape, torch.int8), "scale": ((), torch.float32)}
    return {"v": (shape, torch.float16 if mode is Compression.FP16 else torch.float32)}


def check_chunk(
    wire: Mapping[str, torch.Tensor],
    names: Sequence[str],
    layout: Layout,
    mode: Compression,
    extra: Mapping[str, torch.Tensor] | None = None,
    spec: sparse.SparseSpec | None = None,
) -> str | None:
    """Why a pseudo-gradient chunk is refused, or None.

    It must hold exactly the encoded parts of `names` (and `extra`'s keys, equal to `extra`),
    each of the right shape and dtype, decoding to finite values. A sparse part's index bytes
    have no fixed length: decoding checks them (`sparse.decode`).
    """
    agreed = spec or sparse.SparseSpec()
    expected: dict[str, tuple[tuple[int, ...] | None, torch.dtype]] = {}
    for name in names:
        for part, wire_spec in _wire_parts(mode, layout[name][0], agreed).items():
            expected[f"{name}/{part}"] = wire_spec
    for key, value in (extra or {}).items():
        expected[key] = (tuple(value.shape), value.dtype)
    if set(wire) != set(expected):
        odd = sorted(set(wire) ^ set(expected))[:3]
        return f"tensors {odd} missing or unexpected"
    for key, (shape, dtype) in expected.items():
        got = wire[key]
        fits = got.dim() == 1 if shape is None else tuple(got.shape) == shape
        if not fits or got.dtype != dtype:
            return f"{key} is {got.dtype}{tuple(got.shape)}, expected {dtype}{shape or '[n]'}"
    for key, value in (extra or {}).items():
        if not torch.equal(wire[key], value):
            return f"{key} is {wire[key].tolist()}, agreed {value.tolist()}"
    for name in names:
        prefix = f"{name}/"
        parts = {k[len(prefix) :]: t for k, t in wire.items() if k.startswith(prefix)}
        if mode is Compression.SPARSELOCO:
            # Values are signed scales, which decode checks are finite: no need to densify.
            try:
                sparse.decode(dict(parts), int(torch.Size(layout[name][0]).numel()), agreed)
            except sparse.InvalidSparse as exc:
                return f"{name}: {exc}"
            continue
        if not bool(torch.isfinite(decompress(parts, mode)).all()):
            return f"{name} has non-finite values"
    return None


def check_state(params: Tensors, momentum: Tensors, layout: Layout) -> str | None:
    """A peer's snapshot: the model's names, shapes and dtypes, finite, weights and momentum."""
    for kind, tensors in (("param", params), ("momentum", momentum)):
        if set(tensors) != set(layout):
            odd = sorted(set(tensors) ^ set(layout))[:3]
            return f"{kind} tensors {odd} missing or unexpected"
        for name, (shape, dtype) in layout.items():
            got = tensors[name]
            if tuple(got.shape) != shape or got.dtype != dtype:
                return f"{kind} {name} is {got.dtype}{tuple(got.shape)}, expected {dtype}{shape}"
            if not bool(torch.isfinite(got).all()):
                return f"{kind} {name} has non-finite values"
    return None


def digest_of(tensor: torch.Tensor | None) -> str | None:
    """A sha256 sent as 32 uint8 values, as hex; None for anything else."""
    if tensor is None or tensor.dtype != torch.uint8 or tuple(tensor.shape) != (DIGEST_BYTES,):
        return None
    return bytes(tensor.tolist()).hex()
