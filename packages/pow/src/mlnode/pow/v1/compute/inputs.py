"""Per-block target and per-nonce inputs and permutations (numpy, on CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlnode.pow.v1.compute.params import ModelParams
from mlnode.pow.v1.compute.rng import input_seed, permutation_seed, seeded_generator, target_seed

INPUT_HASHES = 4
PERMUTATION_HASHES = 1
TARGET_HASHES = 1


@dataclass(frozen=True)
class NonceBatch:
    """Inputs and permutations of a batch of nonces, ready for the forward pass."""

    nonces: np.ndarray
    inputs: np.ndarray
    permutations: np.ndarray


def target_vector(block_hash: str, vocab_size: int) -> np.ndarray:
    """The block's unit target vector (f64)."""
    y = seeded_generator(target_seed(block_hash), TARGET_HASHES).standard_normal(vocab_size)
    target: np.ndarray = y / np.sqrt(np.add.reduce(y * y))
    return target


def nonce_input(block_hash: str, public_key: str, nonce: int, params: ModelParams) -> np.ndarray:
    """A nonce's `[seq_len, dim]` input embeddings, rounded f64 -> f32 -> f16 as the reference."""
    rng = seeded_generator(input_seed(block_hash, public_key, nonce), INPUT_HASHES)
    values = rng.standard_normal((params.seq_len, params.dim))
    return values.astype(np.float32).astype(np.float16)


def nonce_permutation(block_hash: str, public_key: str, nonce: int, vocab_size: int) -> np.ndarray:
    """A nonce's permutation of the logits."""
    rng = seeded_generator(permutation_seed(block_hash, public_key, nonce), PERMUTATION_HASHES)
    return rng.permutation(vocab_size)


def make_batch(
    block_hash: str, public_key: str, nonces: Sequence[int], params: ModelParams
) -> NonceBatch:
    """Inputs `[B, seq, dim]` (f16) and permutations `[B, vocab]` of the given nonces."""
    inputs = np.empty((len(nonces), params.seq_len, params.dim), dtype=np.float16)
    perms = np.empty((len(nonces), params.vocab_size), dtype=np.int64)
    for row, nonce in enumerate(nonces):
        inputs[row] = nonce_input(block_hash, public_key, nonce, params)
        perms[row] = nonce_permutation(block_hash, public_key, nonce, params.vocab_size)
    return NonceBatch(nonces=np.asarray(nonces, dtype=np.int64), inputs=inputs, permutations=perms)
