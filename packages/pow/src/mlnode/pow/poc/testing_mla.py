"""TEST-ONLY DeepSeek-V3 forward in plain torch, from DeepSeek's own formulas (never serves).

A third implementation of DeepSeek-V3 (MLA attention, sigmoid `noaux_tc` routing with a correction
bias, shared experts, dense first layers), independent of vLLM and of transformers, written after
`inference/model.py` of deepseek-ai/DeepSeek-V3: RMSNorm in float32; MLA queries through the LoRA
pair `q_a`/`q_b`, keys and values from the compressed `kv_c` (`kv_b`) plus one rotary key shared by
every head; rotary on interleaved pairs `(x[2i], x[2i+1])` (DeepSeek's complex form); softmax scale
`qk_head_dim^-0.5`; gate `sigmoid(x·W)`, experts chosen by `score + bias`, weighted by the score
without the bias, normalised, times `routed_scaling_factor`. It answers whether vLLM or transformers
computes this config right (README of pow: the MLA reference question).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mlnode.pow.poc.artifacts import Artifact, artifacts_from_hidden
from mlnode.pow.poc.decode import (
    Codebook,
    decode_pick_indices,
    ladder_gate_weights,
    routing_ladder,
    snap,
    step_embeddings,
)
from mlnode.pow.poc.inputs import layer_reflection_vectors, nonce_inputs, reflect


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """DeepSeek's RMSNorm, computed in float32."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """DeepSeek's `apply_rotary_emb` on `x [B, S, heads, d]` (complex pairs `x[2i], x[2i+1]`).

    Pair i turns by `pos·theta^(-2i/d)`.
    """
    b, s, heads, dim = x.shape
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.outer(positions.float(), freqs)
    turn = torch.polar(torch.ones_like(angles), angles).view(1, s, 1, dim // 2)
    pairs = torch.view_as_complex(x.float().reshape(b, s, heads, dim // 2, 2).contiguous())
    return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)


class DeepseekV3Reference:
    """The model of a local DeepSeek-V3 checkpoint (config.json + safetensors), in plain torch."""

    def __init__(self, model_dir: str | Path, dtype: torch.dtype = torch.float32) -> None:
        """Load every tensor of the checkpoint in `dtype` (the correction bias stays float32)."""
        from safetensors.torch import load_file

        folder = Path(model_dir)
        self.cfg: dict[str, Any] = json.loads((folder / "config.json").read_text())
        self.dtype = dtype
        self.w = {
            k: v.to(torch.float32 if k.endswith("e_score_correction_bias") else dtype)
            for k, v in load_file(str(folder / "model.safetensors")).items()
        }
        self.hidden = int(self.cfg["hidden_size"])
        self.n_layers = int(self.cfg["num_hidden_layers"])
        self.n_experts = int(self.cfg.get("n_routed_experts") or 0)
        self.top_k = int(self.cfg.get("num_experts_per_tok") or 0)

    def _p(self, layer: int, name: str) -> torch.Tensor:
        return self.w[f"model.layers.{layer}.{name}"]

    def _attention(self, i: int, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        c, eps = self.cfg, float(self.cfg["rms_norm_eps"])
        b, s, _ = x.shape
        heads, nope, rope = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"]
        dv, rank = c["v_head_dim"], c["kv_lora_rank"]
        q_c = rms_norm(
            x @ self._p(i, "self_attn.q_a_proj.weight").T,
            self._p(i, "self_attn.q_a_layernorm.weight"),
            eps,
        )
        q = (q_c @ self._p(i, "self_attn.q_b_proj.weight").T).view(b, s, heads, nope + rope)
        q_nope, q_pe = torch.split(q, [nope, rope], dim=-1)
        theta = float(c.get("rope_parameters", {}).get("rope_theta", c.get("rope_theta", 10000.0)))
        q_pe = rotary(q_pe, positions, theta)
        kv = x @ self._p(i, "self_attn.kv_a_proj_with_mqa.weight").T
        kv_c, k_pe = torch.split(kv, [rank, rope], dim=-1)
        k_pe = rotary(k_pe.unsqueeze(2), positions, theta)  # one rotary key for every head
        kv_c = rms_norm(kv_c, self._p(i, "self_attn.kv_a_layernorm.weight"), eps)
        kv_up = (kv_c @ self._p(i, "self_attn.kv_b_proj.weight").T).view(b, s, heads, nope + dv)
        k_nope, v = torch.split(kv_up, [nope, dv], dim=-1)
        scores = torch.einsum("bshd,bthd->bsht", q_nope, k_nope)
        scores = scores + torch.einsum("bshr,btr->bsht", q_pe, k_pe[:, :, 0])
        scores = scores.float() * (nope + rope) ** -0.5
        mask = torch.full((s, s), float("-inf")).triu(1)
        probs = (scores + mask[:, None, :]).softmax(dim=-1).to(x.dtype)
        out = torch.einsum("bsht,bthd->bshd", probs, v).reshape(b, s, heads * dv)
        return out @ self._p(i, "self_attn.o_proj.weight").T

    def _mlp(self, i: int, prefix: str, x: torch.Tensor) -> torch.Tensor:
        gate = x @ self._p(i, f"{prefix}.gate_proj.weight").T
        up = x @ self._p(i, f"{prefix}.up_proj.weight").T
        return (F.silu(gate) * up) @ self._p(i, f"{prefix}.down_proj.weight").T

    def _moe(self, i: int, x: torch.Tensor, ladder: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cfg
        flat = x.reshape(-1, self.hidden)
        if ladder is not None:  # decode scheme (SPEC §3): the ladder picks, its softmax weighs
            top = ladder.topk(c["num_experts_per_tok"], dim=-1)[1]
            weights = ladder_gate_weights(ladder, top) * float(c.get("routed_scaling_factor", 1.0))
            return self._experts(i, flat, top, weights).view_as(x)
        scores = (flat.float() @ self._p(i, "mlp.gate.weight").float().T).sigmoid()
        choice = scores + self._p(i, "mlp.gate.e_score_correction_bias")
        if c.get("n_group", 1) > 1:
            groups = choice.view(flat.shape[0], c["n_group"], -1).topk(2, dim=-1)[0].sum(-1)
            keep = groups.topk(c["topk_group"], dim=-1)[1]
            allowed = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
            choice = choice.masked_fill(
                ~allowed.repeat_interleave(choice.shape[1] // c["n_group"], 1), float("-inf")
            )
        top = choice.topk(c["num_experts_per_tok"], dim=-1)[1]
        weights = scores.gather(1, top)
        if c.get("norm_topk_prob", True):
            weights = weights / weights.sum(-1, keepdim=True)
        weights = weights * float(c.get("routed_scaling_factor", 1.0))
        return self._experts(i, flat, top, weights).view_as(x)

    def _experts(
        self, i: int, flat: torch.Tensor, top: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros_like(flat, dtype=torch.float32)
        for expert in sorted(set(top.flatten().tolist())):
            rows, slot = (top == expert).nonzero(as_tuple=True)
            y = self._mlp(i, f"mlp.experts.{expert}", flat[rows])
            out.index_add_(0, rows, y.float() * weights[rows, slot, None])
        return out.to(flat.dtype) + self._mlp(i, "mlp.shared_experts", flat)

    @torch.inference_mode()
    def forward(
        self,
        x: torch.Tensor,
        block_hash: str | None = None,
        ladders: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Post-norm hidden states `[B, S, H]` of `inputs_embeds`; PoC reflections with a block.

        `ladders`: per MoE layer, the decode scheme's router logits of every row `[B*S, n]`.
        """
        eps = float(self.cfg["rms_norm_eps"])
        positions = torch.arange(x.shape[1])
        vectors = None
        if block_hash is not None:
            vectors = layer_reflection_vectors(block_hash, self.n_layers, self.hidden)
        for i in range(self.n_layers):
            x = x + self._attention(
                i, rms_norm(x, self._p(i, "input_layernorm.weight"), eps), positions
            )
            h = rms_norm(x, self._p(i, "post_attention_layernorm.weight"), eps)
            dense = i < int(self.cfg.get("first_k_dense_replace", 0))
            ladder = None if ladders is None else ladders.get(i)
            x = x + (self._mlp(i, "mlp", h) if dense else self._moe(i, h, ladder))
            if vectors is not None:
                x = reflect(x, vectors[i].to(x.dtype))
        return rms_norm(x, self.w["model.norm.weight"], eps)

    def prompt_logprobs(self, ids: Sequence[int]) -> list[float]:
        """`log p(ids[t] | ids[:t])` for t ≥ 1, as vLLM's `prompt_logprobs` reports them."""
        x = self.w["model.embed_tokens.weight"][torch.tensor([list(ids)])]
        logits = self.forward(x)[0].float() @ self.w["lm_head.weight"].float().T
        logp = logits.log_softmax(-1)
        return [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]

    def artifacts(
        self, block_hash: str, public_key: str, nonces: Sequence[int], seq_len: int, k_dim: int
    ) -> list[Artifact]:
        """Vector artifacts of `nonces` (SPEC §2), one nonce per forward."""
        out: list[Artifact] = []
        for nonce in nonces:
            x = nonce_inputs(block_hash, public_key, [nonce], seq_len, self.hidden, self.dtype)
            last = self.forward(x, block_hash)[:, -1]
            out += artifacts_from_hidden(last, block_hash, public_key, [nonce], k_dim)
        return out

    def decode(
        self,
        block_hash: str,
        public_key: str,
        nonce: int,
        seq_len: int,
        max_tokens: int,
        codebook: Codebook,
    ) -> list[int]:
        """Decode trajectory of one nonce (SPEC §3), recomputing the whole sequence every step.

        No KV cache: step t runs positions `0 .. seq_len+t-1` again, the prefill rows routed by
        the step-0 ladder and the row of step j by step j's.
        """
        x = nonce_inputs(block_hash, public_key, [nonce], seq_len, self.hidden, self.dtype)
        row_steps = [0] * seq_len
        steps: list[int] = []
        for t in range(max_tokens + 1):
            if t > 0:
                e = step_embeddings(
                    block_hash, public_key, [nonce], t, [steps[-1]], self.hidden, self.dtype
                )
                x = torch.cat([x, e.view(1, 1, -1)], dim=1)
                row_steps.append(t)
            ladders = {
                i: torch.cat(
                    [
                        routing_ladder(block_hash, [nonce], i, [s], self.n_experts, self.top_k)
                        for s in row_steps
                    ]
                )
                for i in range(int(self.cfg.get("first_k_dense_replace", 0)), self.n_layers)
            }
            last = self.forward(x, block_hash, ladders)[:, -1]
            prev = None if t == 0 else [steps[-1]]
            idx = decode_pick_indices(
                block_hash, public_key, [nonce], t, prev, self.hidden, codebook.dim
            )
            k, _ = snap(last, idx, codebook)
            steps.append(int(k[0]))
        return steps
