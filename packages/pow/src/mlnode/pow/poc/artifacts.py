"""PoC v2 vector artifacts (SPEC §2.5–2.7): k-dim pick, Haar rotation, fp16 base64."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mlnode.pow.poc.rng import batched_normal, murmur3_32, seed_from_string

NORM_EPS = 1e-8
HAAR_EPS = 1e-30
#: Most values a vector artifact may have (k_dim; the network uses 12).
MAX_VECTOR_VALUES = 1024
#: Longest base64 text `decode_vector` reads (MAX_VECTOR_VALUES halves, padded).
MAX_VECTOR_B64_CHARS = 4 * -(-2 * MAX_VECTOR_VALUES // 3)


@dataclass(frozen=True)
class Artifact:
    """One nonce's proof: its fp16 vector, little-endian, base64."""

    nonce: int
    vector_b64: str


def pick_seed_string(block_hash: str, public_key: str, nonce: int, k_dim: int) -> str:
    """Seed string of a nonce's k-dim pick (`nonce_{n}`, with underscore)."""
    return f"{block_hash}_{public_key}_nonce_{nonce}_pick_{k_dim}"


def haar_seed_string(block_hash: str, public_key: str, nonce: int, k_dim: int, step: int) -> str:
    """Seed string of Haar reflection `step` of a nonce."""
    return f"{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k_dim}_{step}"


def cuda_order_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest scores' indices per row, in the order CUDA `topk(sorted=False)` returns them.

    SPEC §2.6: the k-1 smallest in ascending index order, then the index of the k-th smallest.
    Scores must be distinct within a row (murmur of distinct keys is).
    """
    if not 0 < k <= scores.shape[-1]:
        raise ValueError(f"k must be in 1..{scores.shape[-1]}, got {k}")
    by_score = torch.topk(scores, k, dim=-1, largest=False, sorted=True).indices
    head = torch.sort(by_score[..., : k - 1], dim=-1).values
    return torch.cat([head, by_score[..., k - 1 :]], dim=-1)


def pick_indices_for_seeds(
    seeds: Sequence[int] | torch.Tensor,
    k: int,
    hidden: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """`[B, k]` picked indices for each pick seed: the k smallest `murmur(d, seed)`, CUDA order."""
    seed_t = torch.as_tensor(seeds, dtype=torch.int64, device=device).view(-1, 1)
    keys = torch.arange(hidden, dtype=torch.int64, device=seed_t.device)
    return cuda_order_smallest(murmur3_32(keys, seed_t), k)


def pick_indices(
    block_hash: str, public_key: str, nonce: int, k_dim: int, hidden: int
) -> torch.Tensor:
    """The k-dim pick of one nonce (LongTensor `[k_dim]`) in CUDA order."""
    seed = seed_from_string(pick_seed_string(block_hash, public_key, nonce, k_dim))
    return pick_indices_for_seeds([seed], k_dim, hidden)[0]


def haar_rotate(
    x: torch.Tensor, block_hash: str, public_key: str, nonces: Sequence[int]
) -> torch.Tensor:
    """Apply each nonce's k-1 seeded Householder reflections to its row of `x` `[B, k]`."""
    b, k = x.shape
    seeds = [
        seed_from_string(haar_seed_string(block_hash, public_key, n, k, j))
        for n in nonces
        for j in range(k - 1)
    ]
    u = batched_normal(seeds, k, device=x.device).view(b, k - 1, k)
    u = u / (torch.linalg.vector_norm(u, dim=-1, keepdim=True) + HAAR_EPS)
    for j in range(k - 1):
        uj = u[:, j]
        x = x - 2 * (x * uj).sum(dim=-1, keepdim=True) * uj
    return x


def normalise(x: torch.Tensor) -> torch.Tensor:
    """`x / (||x|| + 1e-8)` over the last axis."""
    norm: torch.Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / (norm + NORM_EPS)


def artifact_vectors(
    last_hidden: torch.Tensor, block_hash: str, public_key: str, nonces: Sequence[int], k_dim: int
) -> torch.Tensor:
    """Normalised, rotated float32 vectors `[B, k_dim]` (NaN rows stay NaN)."""
    h = normalise(last_hidden.to(torch.float32))
    seeds = [seed_from_string(pick_seed_string(block_hash, public_key, n, k_dim)) for n in nonces]
    idx = pick_indices_for_seeds(seeds, k_dim, h.shape[-1], device=h.device)
    x = torch.gather(h, 1, idx)
    return normalise(haar_rotate(x, block_hash, public_key, nonces))


def artifacts_from_hidden(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    k_dim: int,
) -> list[Artifact]:
    """Artifacts of a chunk from its post-norm last-position hidden states `[B, H]` (any dtype).

    A nonce whose hidden state holds a NaN, or whose fp16 vector does, gets no artifact.
    """
    if last_hidden.dim() != 2 or last_hidden.shape[0] != len(nonces):
        raise ValueError(f"last_hidden must be [{len(nonces)}, H], got {list(last_hidden.shape)}")
    if not 0 < k_dim <= last_hidden.shape[1]:
        raise ValueError(f"k_dim must be in 1..{last_hidden.shape[1]}, got {k_dim}")
    keep = ~torch.isnan(last_hidden).any(dim=-1)
    kept = [n for n, ok in zip(nonces, keep.tolist(), strict=True) if ok]
    if not kept:
        return []
    y16 = artifact_vectors(last_hidden[keep], block_hash, public_key, kept, k_dim).to(torch.float16)
    rows = y16.cpu()
    finite = ~torch.isnan(rows).any(dim=-1)
    return [
        Artifact(nonce=n, vector_b64=encode_vector(row))
        for n, row, ok in zip(kept, rows, finite.tolist(), strict=True)
        if ok
    ]


def encode_vector(values: torch.Tensor) -> str:
    """fp16 little-endian bytes of `values` (rounded to nearest even), base64 with padding."""
    half = values.detach().to(device="cpu", dtype=torch.float16).contiguous().numpy()
    return base64.b64encode(half.astype("<f2").tobytes()).decode("ascii")


def decode_vector(b64: str) -> torch.Tensor | None:
    """float32 values of a base64 fp16 LE vector; None when it is not base64 of whole halves."""
    if not isinstance(b64, str) or len(b64) > MAX_VECTOR_B64_CHARS:
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 2:
        return None
    return torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float32))
