"""Model parameters of PoW v1 and the shapes derived from them."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelParams:
    """The `params` object of an InitDto: a Llama-3.1-style transformer's shape."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    ffn_dim_multiplier: float | None
    multiple_of: int
    norm_eps: float
    rope_theta: float
    use_scaled_rope: bool
    seq_len: int

    def __post_init__(self) -> None:
        """Refuse shapes the model cannot be built with."""
        positive = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of")
        for name in (*positive, "seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"params.{name} must be positive")
        if self.dim % self.n_heads:
            raise ValueError("params.dim must be a multiple of params.n_heads")
        if (self.dim // self.n_heads) % 2:
            raise ValueError("params.dim / params.n_heads must be even (RoPE pairs)")
        if self.n_heads % self.n_kv_heads:
            raise ValueError("params.n_heads must be a multiple of params.n_kv_heads")
        if self.vocab_size < 2:
            raise ValueError("params.vocab_size must be at least 2")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """Hidden width of the SwiGLU feed-forward block."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def parameter_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every parameter's name and shape, in the order the weights are drawn."""
        dim, hd, hidden = self.dim, self.head_dim, self.ffn_hidden_dim
        shapes: list[tuple[str, tuple[int, ...]]] = [
            ("tok_embeddings.weight", (self.vocab_size, dim))
        ]
        for layer in range(self.n_layers):
            prefix = f"layers.{layer}"
            shapes += [
                (f"{prefix}.attention.wq.weight", (self.n_heads * hd, dim)),
                (f"{prefix}.attention.wk.weight", (self.n_kv_heads * hd, dim)),
                (f"{prefix}.attention.wv.weight", (self.n_kv_heads * hd, dim)),
                (f"{prefix}.attention.wo.weight", (dim, self.n_heads * hd)),
                (f"{prefix}.feed_forward.w1.weight", (hidden, dim)),
                (f"{prefix}.feed_forward.w2.weight", (dim, hidden)),
                (f"{prefix}.feed_forward.w3.weight", (hidden, dim)),
                (f"{prefix}.attention_norm.weight", (dim,)),
                (f"{prefix}.ffn_norm.weight", (dim,)),
            ]
        shapes += [("norm.weight", (dim,)), ("output.weight", (self.vocab_size, dim))]
        return shapes

    def total_parameters(self) -> int:
        """Number of weights, the unused token embeddings included."""
        return sum(math.prod(shape) for _, shape in self.parameter_shapes())

    def parameter_bytes(self) -> int:
        """Bytes of the fp16 weights."""
        return 2 * self.total_parameters()
