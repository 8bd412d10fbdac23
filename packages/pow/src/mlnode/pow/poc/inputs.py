"""PoC v2 forward inputs (SPEC §2.3–2.4): per-nonce input embeddings and per-layer reflections."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlnode.pow.poc.rng import (
    batched_normal,
    batched_stronger_normal,
    murmur3_32,
    seed_from_string,
)


def embedding_seed_string(block_hash: str, public_key: str, nonce: int) -> str:
    """Seed string of a nonce's input embeddings (`nonce{n}`, no underscore)."""
    return f"{block_hash}_{public_key}_nonce{nonce}"


def reflection_seed_string(block_hash: str, layer: int) -> str:
    """Seed string of decoder layer `layer`'s Householder vector (block hash only)."""
    return f"{block_hash}_layer_{layer}_householder"


def nonce_inputs(
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    seq_len: int,
    hidden: int,
    dtype: torch.dtype,
    stronger_rng: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Input embeddings `[B, seq_len, H]` in the model dtype (float32 values rounded once).

    Element `(t, d)` of a nonce is stream index `t * H + d` of its normal stream; with
    `stronger_rng` the stream is the 8-segment sha256 variant of SPEC §2.3.
    """
    if seq_len <= 0 or hidden <= 0:
        raise ValueError(f"seq_len and hidden must be positive, got {seq_len} and {hidden}")
    strings = [embedding_seed_string(block_hash, public_key, n) for n in nonces]
    n = seq_len * hidden
    if stronger_rng:
        flat = batched_stronger_normal(strings, n, dtype=dtype, device=device)
    else:
        seeds = [seed_from_string(s) for s in strings]
        flat = batched_normal(seeds, n, dtype=dtype, device=device)
    return flat.view(len(strings), seq_len, hidden)


def pseudo_input_ids(
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    seq_len: int,
    vocab_size: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Token ids `[B, seq_len]` that DeepSeek-V4 needs beside `inputs_embeds` (SPEC §2.3).

    `murmur(t, seed("{bh}_{pk}_nonce{n}_input_ids")) mod vocab_size`; other models take none.
    """
    seeds = [
        seed_from_string(f"{embedding_seed_string(block_hash, public_key, n)}_input_ids")
        for n in nonces
    ]
    seed_t = torch.tensor(seeds, dtype=torch.int64, device=device).view(-1, 1)
    positions = torch.arange(seq_len, dtype=torch.int64, device=seed_t.device)
    return murmur3_32(positions, seed_t) % vocab_size


def layer_reflection_vectors(
    block_hash: str, n_layers: int, hidden: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Unit Householder vectors `[L, H]` (float32), one per decoder layer, same for every nonce."""
    seeds = [seed_from_string(reflection_seed_string(block_hash, i)) for i in range(n_layers)]
    v = batched_normal(seeds, hidden, device=device)
    norm: torch.Tensor = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return v / norm


def reflect(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`x - 2 (x . v) v` over the last axis, computed in x's dtype (v is cast to it)."""
    vv = v.to(dtype=x.dtype, device=x.device)
    dot = (x * vv).sum(dim=-1, keepdim=True)
    return x - 2 * dot * vv
