"""Model weights derived from the block hash: one seeded pool, sliced or tiled per parameter."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from mlnode.pow.v1.compute.params import ModelParams
from mlnode.pow.v1.compute.rng import name_hash, seeded_generator

POOL_FRACTION = 0.05
MIN_POOL_SIZE = 50_000
POOL_HASHES = 4
POOL_STD = 0.02


def pool_size(params: ModelParams) -> int:
    """Size of the shared pool of weight values."""
    return max(MIN_POOL_SIZE, math.floor(params.total_parameters() * POOL_FRACTION))


def weight_pool(block_hash: str, size: int) -> np.ndarray:
    """N(0, 0.02) values from the block hash, rounded f64 -> f32 -> f16 as the reference."""
    values = seeded_generator(block_hash, POOL_HASHES).normal(0.0, POOL_STD, size)
    return values.astype(np.float32).astype(np.float16)


def parameter_values(pool: np.ndarray, block_hash: str, name: str, numel: int) -> np.ndarray:
    """A parameter's flat values: a slice of the pool, or the pool tiled and rotated."""
    size = len(pool)
    key = name_hash(block_hash, name)
    if numel <= size:
        start = key % (size - numel + 1)
        return pool[start : start + numel]
    tiled = np.concatenate([np.tile(pool, numel // size), pool[: numel % size]])
    return np.roll(tiled, -(key % numel))


def seeded_weights(block_hash: str, params: ModelParams) -> Iterator[tuple[str, np.ndarray]]:
    """Every parameter (f16, in draw order), the RMSNorm gains included, one at a time."""
    pool = weight_pool(block_hash, pool_size(params))
    for name, shape in params.parameter_shapes():
        yield name, parameter_values(pool, block_hash, name, math.prod(shape)).reshape(shape)
