"""Seeded random streams of PoW v1: numpy's PCG64 seeded from SHA-256 digests of a string."""

from __future__ import annotations

import hashlib

import numpy as np


def seed_words(seed: str, num_hashes: int) -> np.ndarray:
    """Entropy words: SHA-256 of `seed_i` for each i, split into little-endian uint32 words."""
    digests = b"".join(hashlib.sha256(f"{seed}_{i}".encode()).digest() for i in range(num_hashes))
    return np.frombuffer(digests, dtype="<u4").astype(np.uint32)


def seeded_generator(seed: str, num_hashes: int) -> np.random.Generator:
    """A generator whose stream is fixed by the seed string (no spawn key)."""
    return np.random.default_rng(np.random.SeedSequence(seed_words(seed, num_hashes)))


def name_hash(block_hash: str, name: str) -> int:
    """The first four bytes of SHA-256(`block_hash_name`), big-endian."""
    digest = hashlib.sha256(f"{block_hash}_{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def input_seed(block_hash: str, public_key: str, nonce: int) -> str:
    """Seed string of a nonce's input embeddings."""
    return f"{block_hash}_{public_key}_nonce{nonce}"


def permutation_seed(block_hash: str, public_key: str, nonce: int) -> str:
    """Seed string of a nonce's logits permutation (note the extra underscore)."""
    return f"{block_hash}_{public_key}_nonce_{nonce}_permutations"


def target_seed(block_hash: str) -> str:
    """Seed string of the block's target vector."""
    return f"{block_hash}_target"
