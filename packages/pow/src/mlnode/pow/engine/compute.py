"""One PoC chunk through the served model: vector artifacts (SPEC §2), decode trajectories (§3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mlnode.pow.engine.attention import PocKVCache
from mlnode.pow.engine.forward import ModelHandle, run_forward
from mlnode.pow.engine.protocol import ChunkSpec, DecodeChunkResult
from mlnode.pow.poc.artifacts import artifacts_from_hidden
from mlnode.pow.poc.decode import (
    Codebook,
    decode_pick_indices,
    routing_ladder,
    snap,
    step_embeddings,
)
from mlnode.pow.poc.inputs import layer_reflection_vectors, nonce_inputs

ForwardContext = Callable[[int], Any]


def _ladders(
    handle: ModelHandle, spec: ChunkSpec, step: int, rows_per_nonce: int
) -> dict[int, torch.Tensor] | None:
    """Seeded router logits of every MoE layer for the chunk's rows at `step` (SPEC §3)."""
    if not handle.routers:
        return None
    steps = [step] * len(spec.nonces)
    return {
        site.layer: routing_ladder(
            spec.block_hash, spec.nonces, site.layer, steps, site.n_experts, site.top_k
        )
        .repeat_interleave(rows_per_nonce, dim=0)
        .to(handle.device)
        for site in handle.routers
    }


def _prefill(
    handle: ModelHandle, spec: ChunkSpec, ctx: ForwardContext, cache: PocKVCache | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position post-norm hidden states `[B, H]` of the chunk, and its reflection vectors."""
    batch, seq, hidden = len(spec.nonces), spec.seq_len, handle.hidden
    embeds = nonce_inputs(
        spec.block_hash,
        spec.public_key,
        spec.nonces,
        seq,
        hidden,
        handle.dtype,
        stronger_rng=spec.stronger_rng,
        device=handle.device,
    )
    reflections = layer_reflection_vectors(
        spec.block_hash, len(handle.layers), hidden, device=handle.device
    )
    positions = torch.arange(seq, device=handle.device).repeat(batch)
    out = run_forward(
        handle,
        embeds.view(batch * seq, hidden),
        positions,
        reflections,
        batch=batch,
        forward_context=ctx,
        cache=cache,
        # Decode (a cache is kept): every prefill row of a nonce routes by the step-0 ladder.
        ladders=_ladders(handle, spec, 0, seq) if cache is not None else None,
    )
    return out.view(batch, seq, hidden)[:, -1], reflections


def vector_artifacts(handle: ModelHandle, spec: ChunkSpec, ctx: ForwardContext) -> list[list[Any]]:
    """`[[nonce, vector_b64], ...]` of the chunk; NaN nonces are left out (SPEC §2.5)."""
    last, _ = _prefill(handle, spec, ctx, None)
    artifacts = artifacts_from_hidden(
        last, spec.block_hash, spec.public_key, spec.nonces, spec.k_dim
    )
    return [[a.nonce, a.vector_b64] for a in artifacts]


def _previous(step: int, own: torch.Tensor, teacher: list[list[int]] | None) -> list[int]:
    """Indices seeding step `step`: the prover's claim under teacher forcing, else our own."""
    mine = [int(k) for k in own.tolist()]
    if teacher is None:
        return mine
    return [
        claim[step - 1] if step - 1 < len(claim) else k
        for claim, k in zip(teacher, mine, strict=True)
    ]


def decode_trajectories(
    handle: ModelHandle, spec: ChunkSpec, codebook: Codebook, ctx: ForwardContext
) -> DecodeChunkResult:
    """Prefill step then `max_tokens` one-row steps over the chunk's own KV history (SPEC §3)."""
    if spec.teacher is not None and len(spec.teacher) != len(spec.nonces):
        raise ValueError("teacher forcing needs one trajectory per nonce")
    batch, seq, hidden = len(spec.nonces), spec.seq_len, handle.hidden
    cache = PocKVCache()
    last, reflections = _prefill(handle, spec, ctx, cache)
    idx = decode_pick_indices(
        spec.block_hash, spec.public_key, spec.nonces, 0, None, hidden, codebook.dim, handle.device
    )
    k, scores = snap(last, idx, codebook)
    steps, all_scores = [k.cpu()], [scores.cpu()]
    for t in range(1, spec.max_tokens + 1):
        prev = _previous(t, steps[-1], spec.teacher)
        embeds = step_embeddings(
            spec.block_hash,
            spec.public_key,
            spec.nonces,
            t,
            prev,
            hidden,
            handle.dtype,
            handle.device,
        )
        positions = torch.full((batch,), seq + t - 1, device=handle.device)
        out = run_forward(
            handle,
            embeds,
            positions,
            reflections,
            batch=batch,
            forward_context=ctx,
            cache=cache,
            ladders=_ladders(handle, spec, t, 1),
        )
        idx = decode_pick_indices(
            spec.block_hash,
            spec.public_key,
            spec.nonces,
            t,
            prev,
            hidden,
            codebook.dim,
            handle.device,
        )
        k, scores = snap(out, idx, codebook)
        steps.append(k.cpu())
        all_scores.append(scores.cpu())
    trajectories = torch.stack(steps, dim=1).tolist()
    if spec.teacher is None:
        return DecodeChunkResult(k_points_steps=trajectories)
    return DecodeChunkResult(
        k_points_steps=trajectories, scores=torch.stack(all_scores, dim=1).tolist()
    )
