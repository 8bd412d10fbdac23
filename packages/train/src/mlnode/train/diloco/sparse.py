"""SparseLoCo-class encoding of a pseudo-gradient: per-chunk top-k, 2-bit values, packed indices.

After Sarfi et al., "SparseLoCo: Communication-Efficient LLM Training" (Templar, 2025): the
flattened tensor (plus the error-feedback residual) is cut into chunks of `chunk` values; each
chunk sends only its `k = density x chunk` largest magnitudes. A value travels as 2 bits (sign,
and which of the chunk's two magnitude scales: the mean magnitude below and above the chunk's
mean), so a chunk carries two fp32 scales. Its indices travel as a bitmap or as gaps between
sorted indices packed at the chunk's bit width, whichever is smaller (one format byte says
which). What is not sent stays in the residual for the next round.

Wire parts of one tensor: `fmt` (uint8 per chunk: 0 bitmap, w > 0 gap width), `idx` (uint8
bytes of every chunk's indices, in chunk order), `val` (uint8, four 2-bit codes a byte) and
`scale` (float32 [chunks, 2]). `decode` refuses a payload that is not exactly what an honest
encoder with the agreed density and chunk would send: an index out of range, a repeated one,
more or fewer than k per chunk, a bad format byte, scales that are negative or not finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

Tensors = dict[str, torch.Tensor]

BITMAP = 0
#: The largest chunk: its gaps fit a width of 17 bits.
MAX_CHUNK = 2**16


class InvalidSparse(ValueError):
    """A sparse payload that an honest encoder would not have produced."""


@dataclass(frozen=True)
class SparseSpec:
    """What every worker of a task agrees on: chunk length and the share of values sent.

    `error_decay` (SparseLoCo's beta) scales the error-feedback residual before it is added to
    the next pseudo-gradient, so stale unsent values fade instead of piling up.
    """

    density: float = 1 / 64
    chunk: int = 4096
    error_decay: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise ValueError("density must be in (0, 1]")
        if not 0 <= self.error_decay <= 1:
            raise ValueError("error_decay must be in [0, 1]")
        if not 8 <= self.chunk <= MAX_CHUNK:
            raise ValueError(f"chunk must be in [8, {MAX_CHUNK}]")

    def k_of(self, length: int) -> int:
        """Values a chunk of `length` sends."""
        return min(length, max(1, round(self.density * length)))

    def rows(self, numel: int) -> list[tuple[int, int, int]]:
        """(first chunk, chunks, length) of the full chunks and of the shorter tail."""
        full, tail = divmod(numel, self.chunk)
        groups = [(0, full, self.chunk)] if full else []
        return groups + ([(full, 1, tail)] if tail else [])

    def sent(self, numel: int) -> int:
        """Values sent for a tensor of `numel`."""
        return sum(n * self.k_of(length) for _, n, length in self.rows(numel))

    def chunks(self, numel: int) -> int:
        """Chunks of a tensor of `numel`."""
        return math.ceil(numel / self.chunk)


def _pack_rows(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits.astype(np.uint8), axis=1)


def _index_bytes(idx: np.ndarray, length: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Format byte and index bytes of each row of sorted indices `idx` [rows, k]."""
    gaps = np.diff(idx, axis=1, prepend=-1)
    widths = np.maximum(np.ceil(np.log2(gaps.max(axis=1) + 1)), 1).astype(np.int64)
    k = idx.shape[1]
    bitmap_len = math.ceil(length / 8)
    fmt = np.where(np.ceil(k * widths / 8) < bitmap_len, widths, BITMAP).astype(np.uint8)
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(idx)
    for width in np.unique(fmt):
        rows = np.nonzero(fmt == width)[0]
        if width == BITMAP:
            mask = np.zeros((len(rows), length), dtype=bool)
            np.put_along_axis(mask, idx[rows], True, axis=1)
            packed = _pack_rows(mask)
        else:
            shifts = np.arange(int(width) - 1, -1, -1)
            bits = (gaps[rows][:, :, None] >> shifts) & 1
            packed = _pack_rows(bits.reshape(len(rows), -1))
        for row, data in zip(rows, packed, strict=True):
            out[row] = data
    return fmt, out


def encode(target: torch.Tensor, spec: SparseSpec) -> Tensors:
    """Encode a tensor's flattened fp32 values (pseudo-gradient plus residual)."""
    flat = target.detach().float().reshape(-1)  # selected on its device; only the picks move
    fmts, idx_parts, codes, scales = [], [], [], []
    for first, n, length in spec.rows(flat.numel()):
        block = flat[first * spec.chunk : first * spec.chunk + n * length].reshape(n, length)
        k = spec.k_of(length)
        top = torch.topk(block.abs(), k, dim=1, sorted=False).indices.sort(dim=1).values
        vals = torch.gather(block, 1, top)
        mags = vals.abs()
        split = mags.mean(dim=1, keepdim=True)
        high = mags > split
        count_hi = high.sum(dim=1)
        sum_hi = (mags * high).sum(dim=1)
        lo = ((mags.sum(dim=1) - sum_hi) / (k - count_hi).clamp(min=1)).float()
        hi = torch.where(count_hi > 0, sum_hi / count_hi.clamp(min=1), lo).float()
        scales.append(torch.stack([lo, hi], dim=1).cpu())
        codes.append(((vals < 0).to(torch.uint8) * 2 + high.to(torch.uint8)).reshape(-1).cpu())
        fmt, parts = _index_bytes(top.cpu().numpy().astype(np.int64), length)
        fmts.append(fmt)
        idx_parts.extend(parts)
    code = torch.cat(codes).numpy() if codes else np.empty(0, np.uint8)
    padded = np.zeros(math.ceil(len(code) / 4) * 4, np.uint8)
    padded[: len(code)] = code
    quads = padded.reshape(-1, 4)
    val = quads[:, 0] << 6 | quads[:, 1] << 4 | quads[:, 2] << 2 | quads[:, 3]
    return {
        "fmt": torch.from_numpy(np.concatenate(fmts) if fmts else np.empty(0, np.uint8)),
        "idx": torch.from_numpy(np.concatenate(idx_parts) if idx_parts else np.empty(0, np.uint8)),
        "val": torch.from_numpy(val.astype(np.uint8)),
        "scale": torch.cat(scales) if scales else torch.empty(0, 2),
    }


def wire_shapes(numel: int, spec: SparseSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every part but `idx` (whose length follows from `fmt`)."""
    chunks = spec.chunks(numel)
    return {
        "fmt": ((chunks,), torch.uint8),
        "val": ((math.ceil(spec.sent(numel) / 4),), torch.uint8),
        "scale": ((chunks, 2), torch.float32),
    }


def _decode_indices(
    fmt: np.ndarray, raw: np.ndarray, offsets: np.ndarray, length: int, k: int
) -> np.ndarray:
    idx = np.empty((len(fmt), k), dtype=np.int64)
    for width in np.unique(fmt):
        rows = np.nonzero(fmt == width)[0]
        nbytes = math.ceil(length / 8) if width == BITMAP else math.ceil(k * int(width) / 8)
        data = raw[offsets[rows][:, None] + np.arange(nbytes)]
        bits = np.unpackbits(data, axis=1)
        if width == BITMAP:
            if bits[:, length:].any():
                raise InvalidSparse("a bitmap marks an index out of range")
            counts = bits.sum(axis=1)
            if (counts != k).any():
                raise InvalidSparse(f"a chunk sends {int(counts.max())} values, agreed {k}")
            idx[rows] = np.nonzero(bits[:, :length])[1].reshape(len(rows), k)
            continue
        shifts = np.arange(int(width) - 1, -1, -1)
        gaps = (bits[:, : k * int(width)].reshape(len(rows), k, int(width)) << shifts).sum(axis=2)
        if (gaps < 1).any():
            raise InvalidSparse("a chunk repeats an index")
        found = np.cumsum(gaps, axis=1) - 1
        if (found[:, -1] >= length).any():
            raise InvalidSparse("an index is out of range")
        idx[rows] = found
    return idx


def decode(parts: Tensors, numel: int, spec: SparseSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (int64, ascending) and fp32 values of an encoded tensor, or InvalidSparse."""
    for name, (shape, dtype) in wire_shapes(numel, spec).items():
        got = parts.get(name)
        if got is None or tuple(got.shape) != shape or got.dtype != dtype:
            raise InvalidSparse(f"{name} is not {dtype}{shape}")
    raw_idx = parts.get("idx")
    if raw_idx is None or raw_idx.dtype != torch.uint8 or raw_idx.dim() != 1:
        raise InvalidSparse("idx is not a uint8 vector")
    scale = parts["scale"]
    if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise InvalidSparse("a scale is negative or not finite")
    fmt = parts["fmt"].numpy()
    raw = raw_idx.numpy()
    widths_ok = (fmt == BITMAP) | (fmt <= math.ceil(math.log2(spec.chunk + 1)))
    if not widths_ok.all():
        raise InvalidSparse("a chunk's index format is unknown")
    indices, row_of = [], []
    offset = 0
    for first, n, length in spec.rows(numel):
        k = spec.k_of(length)
        f = fmt[first : first + n]
        lengths = np.where(
            f == BITMAP, math.ceil(length / 8), np.ceil(k * f.astype(np.int64) / 8)
        ).astype(np.int64)
        offsets = offset + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        offset += int(lengths.sum())
        if offset > len(raw):
            raise InvalidSparse("idx is shorter than its formats say")
        local = _decode_indices(f, raw, offsets, length, k)
        indices.append((local + (np.arange(first, first + n) * spec.chunk)[:, None]).reshape(-1))
        row_of.append(np.repeat(np.arange(first, first + n), k))
    if offset != len(raw):
        raise InvalidSparse("idx is longer than its formats say")
    val = parts["val"].numpy()
    unpacked = np.stack([val >> 6, (val >> 4) & 3, (val >> 2) & 3, val & 3], axis=1).reshape(-1)
    codes = torch.from_numpy(unpacked[: spec.sent(numel)].astype(np.int64))
    rows = torch.from_numpy(np.concatenate(row_of)) if row_of else torch.empty(0, dtype=torch.long)
    mags = scale[rows, codes & 1]
    values = torch.where(codes >= 2, -mags, mags)
    flat = torch.from_numpy(np.concatenate(indices)) if indices else rows
    return flat, values


def densify(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense fp32 tensor of decoded sparse values."""
    dense = torch.zeros(math.prod(shape), dtype=torch.float32)
    dense[indices] = values
    return dense.reshape(shape)
