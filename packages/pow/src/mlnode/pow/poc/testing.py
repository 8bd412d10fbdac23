"""TEST-ONLY reference of the PoC v2 forward on Hugging Face transformers (never used to serve).

It proves the maths of this package independently of vLLM: the model runs through transformers'
own code with `inputs_embeds`, a forward hook reflects every decoder layer's output (the residual
stream, which is what vLLM's `hidden + residual` sums to), and the post-norm last position is read.
Tests of the engine can reuse it to compare the engine with a second implementation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch

from mlnode.pow.poc.artifacts import Artifact, artifacts_from_hidden, decode_vector
from mlnode.pow.poc.decode import (
    Codebook,
    decode_pick_indices,
    ladder_gate_weights,
    routing_ladder,
    snap,
    step_embeddings,
)
from mlnode.pow.poc.inputs import layer_reflection_vectors, nonce_inputs, reflect


class ReferenceForward:
    """A decoder-only HF model whose decoder layers get the PoC reflections while in use."""

    def __init__(
        self, model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> None:
        """Load a local model directory (no hub access) in `dtype` on `device`."""
        from transformers import AutoModelForCausalLM

        self.dtype = dtype
        self.device = torch.device(device)
        self.model: Any = cast(
            Any,
            AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=dtype, local_files_only=True
            ),
        )
        self.model.to(self.device)
        self.model.eval()
        self.hidden = int(self.model.config.hidden_size)
        self.layers = list(self.model.model.layers)

    @contextmanager
    def reflections(self, block_hash: str) -> Iterator[None]:
        """Reflect each decoder layer's output with the block's Householder vector."""
        vectors = layer_reflection_vectors(
            block_hash, len(self.layers), self.hidden, device=self.device
        )

        def hook_for(v: torch.Tensor) -> Any:
            def hook(_module: Any, _args: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (reflect(output[0], v), *output[1:])
                return reflect(output, v)

            return hook

        handles = [
            layer.register_forward_hook(hook_for(v))
            for layer, v in zip(self.layers, vectors, strict=True)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def seeded_gates(
        self, block_hash: str, nonces: Sequence[int], step: list[int]
    ) -> Iterator[None]:
        """Decode scheme on MoE (SPEC §3): each top-k router answers from the seeded ladder.

        Written for transformers' `TopKRouter` gates (`mlp.gate` returning logits, weights and
        indices); `step[0]` is the decode step of the rows being computed.
        """

        def hook_for(layer: int) -> Any:
            def hook(gate: Any, args: Any, output: Any) -> Any:
                rows = args[0].reshape(-1, self.hidden).shape[0]
                ladder = routing_ladder(
                    block_hash, nonces, layer, [step[0]] * len(nonces), gate.num_experts, gate.top_k
                ).repeat_interleave(rows // len(nonces), dim=0)
                ids = torch.topk(ladder, gate.top_k, dim=-1).indices
                weights = ladder_gate_weights(ladder, ids).to(output[1].dtype)
                return output[0], weights, ids

            return hook

        gates = [
            (i, getattr(getattr(layer, "mlp", None), "gate", None))
            for i, layer in enumerate(self.layers)
        ]
        handles = [
            gate.register_forward_hook(hook_for(i))
            for i, gate in gates
            if gate is not None and hasattr(gate, "top_k") and hasattr(gate, "num_experts")
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.inference_mode()
    def last_hidden(self, block_hash: str, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Post-norm hidden state of the last position of each sequence `[B, H]` (model dtype)."""
        with self.reflections(block_hash):
            out = self.model.model(inputs_embeds=inputs_embeds, use_cache=False)
        hidden: torch.Tensor = out.last_hidden_state[:, -1]
        return hidden

    def artifacts(
        self,
        block_hash: str,
        public_key: str,
        nonces: Sequence[int],
        seq_len: int,
        k_dim: int,
        batch_size: int = 16,
    ) -> list[Artifact]:
        """Vector artifacts of `nonces` (SPEC §2), in chunks of `batch_size`."""
        out: list[Artifact] = []
        for i in range(0, len(nonces), batch_size):
            chunk = list(nonces[i : i + batch_size])
            x = nonce_inputs(
                block_hash, public_key, chunk, seq_len, self.hidden, self.dtype, device=self.device
            )
            h = self.last_hidden(block_hash, x)
            out += artifacts_from_hidden(h, block_hash, public_key, chunk, k_dim)
        return out

    @torch.inference_mode()
    def decode(
        self,
        block_hash: str,
        public_key: str,
        nonces: Sequence[int],
        seq_len: int,
        max_tokens: int,
        codebook: Codebook,
        forced: Sequence[Sequence[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode-scheme trajectories (SPEC §3) with a KV cache.

        Args:
            block_hash: seeds the inputs, reflections and picks.
            public_key: the prover's key.
            nonces: one trajectory each, computed together.
            seq_len: prefill positions.
            max_tokens: decode steps after the prefill step.
            codebook: points to snap to.
            forced: per nonce, the prover's indices to seed each next step with (teacher forcing);
                None runs free.

        Returns:
            `(k, scores)`: own indices `[B, max_tokens + 1]` and codebook scores `[B, T + 1, P]`.
        """
        x = nonce_inputs(
            block_hash, public_key, nonces, seq_len, self.hidden, self.dtype, device=self.device
        )
        ks: list[torch.Tensor] = []
        all_scores: list[torch.Tensor] = []
        step = [0]
        with self.reflections(block_hash), self.seeded_gates(block_hash, nonces, step):
            out = self.model.model(inputs_embeds=x, use_cache=True)
            for t in range(max_tokens + 1):
                step[0] = t
                if t > 0:
                    prev = [int(row[t - 1]) for row in forced] if forced else ks[-1].tolist()
                    e = step_embeddings(
                        block_hash,
                        public_key,
                        nonces,
                        t,
                        prev,
                        self.hidden,
                        self.dtype,
                        self.device,
                    )
                    out = self.model.model(
                        inputs_embeds=e.unsqueeze(1),
                        past_key_values=out.past_key_values,
                        use_cache=True,
                    )
                prev_pick = None if t == 0 else prev
                idx = decode_pick_indices(
                    block_hash,
                    public_key,
                    nonces,
                    t,
                    prev_pick,
                    self.hidden,
                    codebook.dim,
                    self.device,
                )
                k, scores = snap(out.last_hidden_state[:, -1], idx, codebook)
                ks.append(k)
                all_scores.append(scores)
        return torch.stack(ks, dim=1), torch.stack(all_scores, dim=1)


#: Public vector sets of the test data (`tests/data/poc_v2`): model folder and vector file.
VECTOR_SETS: dict[str, tuple[str, str]] = {
    "dense-qwen3": ("model", "vectors-A.json"),
    "qwen3-moe": ("models/qwen3-moe", "models/qwen3-moe/vectors-C.json"),
    "glm4-moe": ("models/glm4-moe", "models/glm4-moe/vectors-E.json"),
    "minimax-m2": ("models/minimax-m2", "models/minimax-m2/vectors-I.json"),
}


def artifact_distances(
    artifacts: Sequence[Artifact], reference: Sequence[Mapping[str, Any]]
) -> dict[int, float]:
    """L2 between each computed artifact and the reference's of the same nonce (missing: inf)."""
    got = {a.nonce: decode_vector(a.vector_b64) for a in artifacts}
    out: dict[int, float] = {}
    for item in reference:
        mine, theirs = got.get(item["nonce"]), decode_vector(item["vector_b64"])
        if mine is None or theirs is None or mine.shape != theirs.shape:
            out[item["nonce"]] = math.inf
        else:
            out[item["nonce"]] = float(torch.linalg.vector_norm(mine - theirs))
    return out
