"""PoC v2 seeds, murmur and the uniform / normal streams (SPEC §2.1–2.3) against a scalar model."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
import torch

from mlnode.pow.poc import rng

M32 = 0xFFFFFFFF


def scalar_murmur(key: int, seed: int) -> int:
    """SPEC §2.1 written out for one key, on Python integers."""

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & M32

    k = key & M32
    k = (k * 0xCC9E2D51) & M32
    k = rotl(k, 15)
    k = (k * 0x1B873593) & M32
    h = (seed & M32) ^ k
    h = rotl(h, 13)
    h = (h * 5 + 0xE6546B64) & M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def scalar_normal(seed: int, n: int) -> np.ndarray:
    """SPEC §2.2 in numpy float32, element by element."""
    p = (n + 1) // 2
    u = np.array([np.float32(scalar_murmur(i, seed)) for i in range(2 * p)], dtype=np.float32)
    u = u / np.float32(4294967296.0)
    u1 = np.maximum(u[:p], np.float32(1e-10))
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    theta = np.float32(2 * math.pi) * u[p:]
    return np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:n]


def test_seed_is_the_first_32_bits_of_sha256(poc_vectors: dict[str, Any]) -> None:
    s = "abc_def_nonce7"
    assert rng.seed_from_string(s) == int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)
    bh, pk = poc_vectors["params"]["block_hash"], poc_vectors["params"]["public_key"]
    for item in poc_vectors["intermediates"]:
        n = item["nonce"]
        assert rng.seed_from_string(f"{bh}_{pk}_nonce{n}") == item["input_embeds_seed"]
        assert rng.seed_from_string(f"{bh}_{pk}_nonce_{n}_pick_12") == item["pick_seed"]
    layer_seeds = [rng.seed_from_string(f"{bh}_layer_{i}_householder") for i in range(3)]
    assert layer_seeds == poc_vectors["layer_householder_seeds"]


@pytest.mark.parametrize("seed", [0, 1, 42, 0x7FFFFFFF, 0x80000000, M32, 3338675132])
def test_murmur_matches_the_scalar_rule(seed: int) -> None:
    keys = [0, 1, 2, 3, 255, 4096, 65535, 2**31 - 1, 2**31, M32, -1, -7, 2**32 + 5]
    got = rng.murmur3_32(torch.tensor(keys, dtype=torch.int64), seed).tolist()
    assert got == [scalar_murmur(k, seed) for k in keys]


def test_murmur_skips_the_length_step_of_standard_mmh3() -> None:
    def fmix(h: int) -> int:
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & M32
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & M32
        return h ^ (h >> 16)

    def unfmix_free_body(key: int, seed: int) -> int:
        k = (key * 0xCC9E2D51) & M32
        k = ((k << 15) | (k >> 17)) & M32
        k = (k * 0x1B873593) & M32
        h = seed ^ k
        h = ((h << 13) | (h >> 19)) & M32
        return (h * 5 + 0xE6546B64) & M32

    body = unfmix_free_body(77, 9)
    assert rng.murmur3_32(torch.tensor([77]), 9).item() == fmix(body)
    assert rng.murmur3_32(torch.tensor([77]), 9).item() != fmix(body ^ 4)


def test_murmur_broadcasts_per_row_seeds() -> None:
    keys = torch.arange(50)
    seeds = torch.tensor([[3], [M32], [123456789]])
    got = rng.murmur3_32(keys, seeds)
    assert got.shape == (3, 50)
    for row, seed in zip(got, [3, M32, 123456789], strict=True):
        assert row.tolist() == [scalar_murmur(k, seed) for k in range(50)]


def test_fast_int32_path_equals_the_exact_int64_path() -> None:
    gen = torch.Generator().manual_seed(5)
    keys = rng._mix_key(torch.randint(0, 2**32, (10_007,), generator=gen, dtype=torch.int64))
    seeds = torch.randint(0, 2**32, (4, 1), generator=gen, dtype=torch.int64)
    assert rng._wraps_exactly(torch.device("cpu"))
    assert torch.equal(rng._finish32(keys, seeds), rng._finish64(keys, seeds))


def test_uniform_is_float32_of_the_hash_over_2_pow_32() -> None:
    seed = 1667182306
    u = rng.uniform(seed, 1000)
    assert u.dtype == torch.float32
    want = np.array([np.float32(scalar_murmur(i, seed)) for i in range(1000)], dtype=np.float32)
    assert np.array_equal(u.numpy(), want / np.float32(2**32))


@pytest.mark.parametrize("n", [1, 2, 7, 256, 1001])
def test_normal_is_cosines_then_sines(n: int) -> None:
    seed = 490321199
    got = rng.normal(seed, n).numpy()
    assert got.shape == (n,)
    np.testing.assert_allclose(got, scalar_normal(seed, n), rtol=2e-6, atol=2e-6)


def test_batched_normal_rows_are_bitwise_the_single_streams() -> None:
    seeds = [5, 1667182306, M32]
    batch = rng.batched_normal(seeds, 999)
    for row, seed in zip(batch, seeds, strict=True):
        assert torch.equal(row, rng.normal(seed, 999))


def test_chunking_does_not_change_values(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [11, 22, 33]
    whole = rng.batched_normal(seeds, 1001)
    monkeypatch.setattr(rng, "_CHUNK", 97)
    assert torch.equal(rng.batched_normal(seeds, 1001), whole)


def test_batched_normal_casts_once_to_the_dtype() -> None:
    f32 = rng.batched_normal([9], 300)
    bf16 = rng.batched_normal([9], 300, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    assert torch.equal(bf16, f32.to(torch.bfloat16))


def test_stronger_normal_concatenates_eight_sha256_segments() -> None:
    s = "bh_pk_nonce3"
    digest = hashlib.sha256(s.encode()).digest()
    subs = [int.from_bytes(digest[4 * j : 4 * j + 4], "big") for j in range(8)]
    assert rng.stronger_sub_seeds(s) == subs
    n = 1003
    size = math.ceil(n / 8)
    parts = [rng.normal(subs[j], min(size, n - j * size)) for j in range(8) if j * size < n]
    assert torch.equal(rng.stronger_normal(s, n), torch.cat(parts))


def test_stronger_segments_may_be_fewer_than_eight() -> None:
    assert rng.stronger_segments(10) == [(0, 2), (2, 2), (4, 2), (6, 2), (8, 2)]
    assert rng.stronger_segments(16) == [(2 * j, 2) for j in range(8)]
    assert rng.stronger_segments(17)[-1] == (15, 2)


def test_streams_are_the_same_on_the_exact_path(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [7, 0x80000001]
    fast = rng.batched_normal(seeds, 513)
    rng._mixed_counters.cache_clear()
    monkeypatch.setattr(rng, "_wraps_exactly", lambda _device: False)
    try:
        assert torch.equal(rng.batched_normal(seeds, 513), fast)
    finally:
        rng._mixed_counters.cache_clear()


def test_streams_longer_than_the_cached_table(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = rng.batched_normal([3, 4], 777)
    monkeypatch.setattr(rng, "_CACHE_MAX", 100)
    monkeypatch.setattr(rng, "_CHUNK", 64)
    assert torch.equal(rng.batched_normal([3, 4], 777), whole)
