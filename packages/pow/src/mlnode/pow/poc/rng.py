"""PoC v2 random streams (SPEC §2.1–2.3): sha256 seeds, a one-block murmur3 and Box-Muller normals.

Every stream is a pure function of a seed and a counter, so it is computed for many counters (and
many seeds) at once. The exact path works on int64 with 32-bit products split into 16-bit halves,
so nothing overflows on any device. The fast path (~8x) runs the seed-dependent half of murmur on
int32 bit patterns whose products and shifts wrap mod 2^32; it is used only on devices where a
check against the exact path agrees bit for bit, since signed wrap-around is not a C++ guarantee.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import lru_cache

import torch

MASK32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_F1 = 0x85EBCA6B
_F2 = 0xC2B2AE35
_TWO_PI = 2.0 * math.pi
_U_SCALE = 4294967296.0
_U1_FLOOR = 1e-10
#: Elements per chunk of a batched stream on CPU: temporaries stay small enough for the allocator
#: to reuse (larger ones were mmapped and zero-faulted anew each chunk: 3x the CPU time).
_CHUNK = 1 << 20
#: On accelerators, larger chunks save kernel launches; temporaries stay under ~0.5 GiB.
_CHUNK_DEVICE = 1 << 24
#: Longest key range whose seed-independent murmur half is cached (64 MiB as int32).
_CACHE_MAX = 1 << 24


def seed_from_string(s: str) -> int:
    """First 8 hex digits of sha256(utf8(s)) as an unsigned 32-bit integer."""
    return int(hashlib.sha256(s.encode("utf-8")).hexdigest()[:8], 16)


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """`a * c mod 2^32` for int64 `a` in [0, 2^32) without leaving int64."""
    low = a * (c & 0xFFFF)
    high = ((a * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & MASK32


def _rotl(a: torch.Tensor, r: int) -> torch.Tensor:
    return ((a << r) | (a >> (32 - r))) & MASK32


def _mix_key(keys: torch.Tensor) -> torch.Tensor:
    k = keys.to(torch.int64) & MASK32
    return _mul32(_rotl(_mul32(k, _C1), 15), _C2)


@lru_cache(maxsize=4)
def _mixed_counters(n: int, device: torch.device) -> torch.Tensor:
    """The seed-independent half of murmur for keys 0..n-1 (shared by every seed).

    Kept as int32 bit patterns where the fast path runs (half the memory, no conversion per use).
    """
    mixed = _mix_key(torch.arange(n, dtype=torch.int64, device=device))
    return _to_int32_bits(mixed) if _wraps_exactly(device) else mixed


def _finish64(k: torch.Tensor, seed: int | torch.Tensor) -> torch.Tensor:
    h = (k.to(torch.int64) & MASK32) ^ (
        seed & MASK32 if isinstance(seed, int) else seed.to(torch.int64) & MASK32
    )
    h = _rotl(h, 13)
    h = (h * 5 + 0xE6546B64) & MASK32
    h = h ^ (h >> 16)
    h = _mul32(h, _F1)
    h = h ^ (h >> 13)
    h = _mul32(h, _F2)
    return h ^ (h >> 16)


def _signed32(c: int) -> int:
    c &= MASK32
    return c - (1 << 32) if c >= 1 << 31 else c


def _lsr32_(h: torch.Tensor, r: int) -> torch.Tensor:
    """Logical right shift of int32 bit patterns (a new tensor)."""
    return (h >> r).bitwise_and_((1 << (32 - r)) - 1)


def _finish32(k: torch.Tensor, seed: int | torch.Tensor) -> torch.Tensor:
    """`_finish64` on int32 bit patterns with wrapping products (in place, ~3x faster)."""
    s = _signed32(seed) if isinstance(seed, int) else _to_int32_bits(seed)
    h = torch.bitwise_xor(_to_int32_bits(k), s)
    h = (h << 13).bitwise_or_(_lsr32_(h, 19))
    h.mul_(5).add_(_signed32(0xE6546B64))
    h.bitwise_xor_(_lsr32_(h, 16)).mul_(_signed32(_F1))
    h.bitwise_xor_(_lsr32_(h, 13)).mul_(_signed32(_F2))
    h.bitwise_xor_(_lsr32_(h, 16))
    return h.to(torch.int64).bitwise_and_(MASK32)


def _to_int32_bits(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.int32:
        return x
    x = x.to(torch.int64) & MASK32
    return torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


@lru_cache(maxsize=8)
def _wraps_exactly(device: torch.device) -> bool:
    """Whether int32 products and shifts wrap on this device as the exact int64 path computes.

    Checked once per device over keys that reach the non-vectorised tails of the kernels.
    """
    keys = _mix_key(torch.arange(4_099, dtype=torch.int64, device=device) * 1_048_573)
    seeds = torch.tensor([[0], [1], [0x7FFFFFFF], [0x80000000], [MASK32]], device=device)
    try:
        return bool(torch.equal(_finish32(keys, seeds), _finish64(keys, seeds)))
    except (RuntimeError, TypeError):
        return False


def _finish(k: torch.Tensor, seed: int | torch.Tensor) -> torch.Tensor:
    if _wraps_exactly(k.device):
        return _finish32(k, seed)
    return _finish64(k, seed)


def murmur3_32(keys: torch.Tensor, seed: int | torch.Tensor) -> torch.Tensor:
    """MurmurHash3-x86-32 of one 4-byte block per key, without the length step (SPEC §2.1).

    Args:
        keys: integer keys (taken mod 2^32).
        seed: one seed, or a tensor of seeds broadcast against `keys` (e.g. `[B, 1]` vs `[N]`).

    Returns:
        int64 hashes in [0, 2^32), shaped as `keys` broadcast with `seed`.
    """
    return _finish(_mix_key(keys), seed)


def _counter_hashes(seeds: torch.Tensor, start: int, stop: int, total: int) -> torch.Tensor:
    """murmur(start..stop-1, seed) for each seed in `seeds` ([B]) -> [B, stop - start].

    `total` is the stream's whole key range, so chunks of one stream share one cached table.
    """
    if total <= _CACHE_MAX:
        mixed = _mixed_counters(total, seeds.device)[start:stop]
    else:
        mixed = _mix_key(torch.arange(start, stop, dtype=torch.int64, device=seeds.device))
    return _finish(mixed, seeds.view(-1, 1))


def _uniform_from_hashes(h: torch.Tensor) -> torch.Tensor:
    return h.to(torch.float32) / _U_SCALE


def uniform(seed: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`u[i] = float32(murmur(i, seed)) / 2^32` for i in 0..n-1 (float32; may be exactly 1.0)."""
    seeds = torch.tensor([seed], dtype=torch.int64, device=device)
    return _uniform_from_hashes(_counter_hashes(seeds, 0, n, n))[0]


def _box_muller_pairs(out: torch.Tensor, seeds: torch.Tensor, n: int, begin: int, end: int) -> None:
    """Fill the outputs of Box-Muller pairs [begin, end) of normal(seed, n) for each seed.

    Pair i turns u[i] and u[P + i] into output i (cosine) and output P + i (sine, if < n).
    """
    half = (n + 1) // 2
    u1 = _uniform_from_hashes(_counter_hashes(seeds, begin, end, 2 * half))
    u2 = _uniform_from_hashes(_counter_hashes(seeds, half + begin, half + end, 2 * half))
    r = torch.sqrt(-2.0 * torch.log(torch.clamp(u1, min=_U1_FLOOR)))
    theta = u2 * _TWO_PI
    out[:, begin:end] = r * torch.cos(theta)
    sin_end = min(n, half + end) - half
    if sin_end > begin:
        out[:, half + begin : half + sin_end] = (r * torch.sin(theta))[:, : sin_end - begin]


def batched_normal(
    seeds: torch.Tensor | Sequence[int],
    n: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """normal(seed, n) for each seed -> `[B, n]`, computed in float32 then cast to `dtype`.

    The first ceil(n/2) outputs are the cosine halves of Box-Muller, the rest the sine halves
    (SPEC §2.2). Work is chunked so temporaries stay bounded whatever `B * n` is.
    """
    seed_t = torch.as_tensor(seeds, dtype=torch.int64, device=device).view(-1)
    out = torch.empty((seed_t.numel(), n), dtype=dtype, device=seed_t.device)
    half = (n + 1) // 2
    chunk = _CHUNK if seed_t.device.type == "cpu" else _CHUNK_DEVICE
    rows = max(1, chunk // max(1, n))
    for r0 in range(0, seed_t.numel(), rows):
        row_seeds = seed_t[r0 : r0 + rows]
        pairs = max(1, chunk // (2 * row_seeds.numel()))
        for p0 in range(0, half, pairs):
            _box_muller_pairs(out[r0 : r0 + rows], row_seeds, n, p0, min(half, p0 + pairs))
    return out


def normal(seed: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normals of SPEC §2.2 (float32, length n)."""
    return batched_normal([seed], n, device=device)[0]


def stronger_sub_seeds(seed_string: str) -> list[int]:
    """The 8 big-endian uint32 words of sha256(utf8(seed_string)) (SPEC §2.3 `poc_stronger_rng`)."""
    digest = hashlib.sha256(seed_string.encode("utf-8")).digest()
    return [int.from_bytes(digest[4 * j : 4 * j + 4], "big") for j in range(8)]


def stronger_segments(n: int) -> list[tuple[int, int]]:
    """(start, length) of each of the up to 8 segments a stream of n values is cut into."""
    size = -(-n // 8)
    return [(j * size, min(size, n - j * size)) for j in range(8) if j * size < n]


def stronger_normal(
    seed_string: str, n: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """`poc_stronger_rng` normals: 8 sha256 sub-seeds, one normal stream per segment."""
    return batched_stronger_normal([seed_string], n, device=device)[0]


def batched_stronger_normal(
    seed_strings: list[str],
    n: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """stronger_normal for each seed string -> `[B, n]` in `dtype`."""
    subs = [stronger_sub_seeds(s) for s in seed_strings]
    out = torch.empty((len(seed_strings), n), dtype=dtype, device=device)
    for j, (start, length) in enumerate(stronger_segments(n)):
        seeds = [row[j] for row in subs]
        out[:, start : start + length] = batched_normal(seeds, length, dtype=dtype, device=device)
    return out
