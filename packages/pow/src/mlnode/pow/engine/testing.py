"""TEST-ONLY: a deterministic stand-in for `PocWorkerExtension`, the worker side of PoC v2.

Published in the entry point group `mlnode.testing.worker_extensions`, where infer's fake engine
finds it and mixes it into its worker as vLLM mixes in `--worker-extension-cls`. Everything above
the worker (the endpoint plugin, routes, runner, jobs, callbacks, validation) is the real code; only
the forward pass is replaced: a nonce's last hidden state is seeded from (block hash, public key,
nonce), then turned into an artifact by the real artifact maths, so a validator recomputes the same
vector and a forged one mismatches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from mlnode.pow.engine.protocol import ChunkSpec, ModelInfo
from mlnode.pow.poc.artifacts import artifacts_from_hidden

HIDDEN = 64
ARCHITECTURE = "Qwen3ForCausalLM"


def hidden_states(block_hash: str, public_key: str, nonces: Sequence[int]) -> torch.Tensor:
    """The stand-in's last hidden states `[len(nonces), HIDDEN]`, one seed per nonce."""
    rows = []
    for nonce in nonces:
        digest = hashlib.sha256(f"{block_hash}|{public_key}|{nonce}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        rows.append(torch.randn(HIDDEN, generator=generator))
    return torch.stack(rows)


def artifact(block_hash: str, public_key: str, nonce: int, k_dim: int) -> str:
    """The `vector_b64` the stand-in worker computes for one nonce."""
    hidden = hidden_states(block_hash, public_key, [nonce])
    return artifacts_from_hidden(hidden, block_hash, public_key, [nonce], k_dim)[0].vector_b64


class DeterministicPocWorker:
    """The vector-scheme methods of `PocWorkerExtension`, answering in the same wire shapes.

    The decode scheme needs a codebook and a model to steer, so it is left to the real worker:
    the stand-in reports it unavailable, and the runner refuses decode requests (409) before any
    chunk reaches the worker.
    """

    def mlnode_poc_describe(self) -> dict[str, Any]:
        """A small dense model the PoC forward supports."""
        return ModelInfo(
            architecture=ARCHITECTURE,
            hidden=HIDDEN,
            n_layers=2,
            dtype="float16",
            decode_unsupported="the test stand-in worker has no decode forward",
        ).to_wire()

    def mlnode_poc_vectors(self, spec: dict[str, Any]) -> list[list[Any]]:
        """Vector artifacts `[[nonce, vector_b64], ...]` of one chunk."""
        chunk = ChunkSpec.from_wire(spec)
        hidden = hidden_states(chunk.block_hash, chunk.public_key, chunk.nonces)
        found = artifacts_from_hidden(
            hidden, chunk.block_hash, chunk.public_key, chunk.nonces, chunk.k_dim
        )
        return [[a.nonce, a.vector_b64] for a in found]
