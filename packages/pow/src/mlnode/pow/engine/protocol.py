"""What crosses from the API server to the worker for one PoC chunk, in plain msgpack-able types.

vLLM serialises `collective_rpc` arguments and results with msgpack; only lists, dicts with string
keys, strings and numbers cross, so both sides convert through these helpers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Worker methods added by `PocWorkerExtension` (names prefixed so they cannot clash with vLLM's).
RPC_DESCRIBE = "mlnode_poc_describe"
RPC_VECTORS = "mlnode_poc_vectors"
RPC_DECODE = "mlnode_poc_decode"


@dataclass(frozen=True)
class ChunkSpec:
    """One forward's worth of nonces and the proof parameters they share."""

    block_hash: str
    public_key: str
    nonces: list[int]
    seq_len: int
    k_dim: int
    stronger_rng: bool = False
    max_tokens: int = 0
    codebook_sha256: str | None = None
    #: Decode validation: the prover's trajectories, one per nonce (teacher forcing).
    teacher: list[list[int]] | None = None

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ChunkSpec:
        """Inverse of `to_wire`."""
        return cls(**data)


@dataclass(frozen=True)
class ModelInfo:
    """What the worker reports about the served model (`RPC_DESCRIBE`)."""

    architecture: str
    hidden: int
    n_layers: int
    dtype: str
    unsupported: str | None = None
    #: Why the decode scheme cannot run here (e.g. a MoE kernel without a router to steer).
    decode_unsupported: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ModelInfo:
        """Inverse of `to_wire`."""
        return cls(**data)


@dataclass(frozen=True)
class DecodeChunkResult:
    """Per nonce of a decode chunk: its trajectory and, under teacher forcing, the step scores."""

    k_points_steps: list[list[int]]
    scores: list[list[list[float]]] | None = None

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> DecodeChunkResult:
        """Inverse of `to_wire`."""
        return cls(**data)
