"""Request and response bodies of the PoW routes (the network node's field names, DESIGN §3)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from mlnode.common.callbacks import CallbackStats
from mlnode.common.lifecycle import ServiceStatus
from mlnode.pow.v1.compute.params import ModelParams

#: Nonces of one ProofBatch (a compute batch's proofs, or the network node's sample to validate):
#: with the validation queue full (`MLNODE_POW_VALIDATION_QUEUE_SIZE`, 1,000) they hold ~0.7 GiB.
MAX_PROOF_NONCES = 10_000


class PowParams(BaseModel):
    """Shape of the seeded transformer (`params` of an InitDto)."""

    model_config = ConfigDict(extra="ignore")

    dim: int = Field(description="Model width.", gt=0)
    n_layers: int = Field(description="Transformer blocks.", gt=0)
    n_heads: int = Field(description="Attention heads.", gt=0)
    n_kv_heads: int | None = Field(None, description="Key/value heads; n_heads when null.", gt=0)
    vocab_size: int = Field(description="Output logits (and permutation length).", gt=1)
    ffn_dim_multiplier: float | None = Field(description="Feed-forward width multiplier.")
    multiple_of: int = Field(description="Feed-forward width is rounded up to this.", gt=0)
    norm_eps: float = Field(description="RMSNorm epsilon.", gt=0)
    rope_theta: float = Field(description="RoPE base.", gt=0)
    use_scaled_rope: bool = Field(description="Llama-3.1 RoPE frequency scaling.")
    seq_len: int = Field(description="Input positions per nonce.", gt=0)

    def to_model_params(self) -> ModelParams:
        """The compute-side parameters (raises ValueError on an impossible shape)."""
        return ModelParams(
            **self.model_dump(exclude={"n_kv_heads"}), n_kv_heads=self.n_kv_heads or self.n_heads
        )


class PowInitRequest(BaseModel):
    """InitDto: the block to work on, the model shape and where results go."""

    model_config = ConfigDict(extra="ignore")

    block_hash: str = Field(
        description="Block hash; seeds the weights and the target.", min_length=1
    )
    block_height: int = Field(description="Block height (reported back, not computed with).")
    public_key: str = Field(description="This participant's key; seeds the nonce inputs.")
    batch_size: int = Field(description="Nonces per forward pass (lowered to fit memory).", gt=0)
    r_target: float = Field(description="A nonce is a proof when its distance is below this.")
    fraud_threshold: float = Field(description="Fraud when the honest p-value is below this.")
    params: PowParams = Field(description="Model shape.")
    node_id: int = Field(description="This node's index among the participant's nodes.", ge=0)
    node_count: int = Field(description="Nodes sharing the nonce space.", gt=0)
    url: str = Field(description="Callback base URL (`/generated` and `/validated` are appended).")


class ProofBatch(BaseModel):
    """Nonces whose distance is below r_target, as sent to `{url}/generated`."""

    public_key: str = Field(description="The prover's key (its nonce inputs are seeded by it).")
    block_hash: str = Field(description="Block hash the proofs were computed for.")
    block_height: int = Field(description="Block height.")
    nonces: list[int] = Field(
        max_length=MAX_PROOF_NONCES, description="Nonces, paired with `dist`."
    )
    dist: list[float] = Field(max_length=MAX_PROOF_NONCES, description="Distance of each nonce.")
    node_id: int = Field(description="Index of the prover's node.")


class ValidatedBatch(ProofBatch):
    """A ProofBatch after recomputation, sent to `{url}/validated`; `dist` is recomputed."""

    received_dist: list[float] = Field(
        max_length=MAX_PROOF_NONCES, description="Distances as the prover claimed them."
    )
    r_target: float = Field(description="Threshold the batch was judged against.")
    fraud_threshold: float = Field(description="p-value below which fraud is declared.")
    n_invalid: int = Field(description="Nonces that failed recomputation.")
    probability_honest: float = Field(description="P[this many failures | honest prover].")
    fraud_detected: bool = Field(description="probability_honest < fraud_threshold.")


class PowPhase(StrEnum):
    """What the PoW worker is doing (the network node's names)."""

    # The network node's Go client names this state POW_NO_CONTROLLER, with the value NOT_LOADED.
    NO_CONTROLLER = "NOT_LOADED"
    IDLE = "IDLE"
    LOADING = "LOADING"
    GENERATING = "GENERATING"
    VALIDATING = "VALIDATING"
    STOPPED = "STOPPED"


class PowStatus(BaseModel):
    """GET /pow/status: the network node reads `status` and `is_model_initialized`."""

    status: PowPhase = Field(description="Current PoW phase.")
    is_model_initialized: bool = Field(description="True once the seeded model is built.")
    block_hash: str | None = Field(None, description="Block hash of the loaded model.")
    block_height: int | None = Field(None, description="Block height of the loaded model.")
    devices: list[str] = Field(default_factory=list, description="Devices of each GPU group.")
    batch_size: int | None = Field(None, description="Nonces per forward pass, after fitting.")
    nonces_checked: int = Field(0, description="Nonces computed since init.")
    proofs_found: int = Field(0, description="Nonces below r_target since init.")
    nonces_per_second: float = Field(0.0, description="Recent compute rate.")
    batches_validated: int = Field(0, description="Received batches judged since init.")
    validation_queue: int = Field(0, description="Received batches waiting for validation.")
    batches_sent: int = Field(0, description="Callbacks delivered.")
    batches_pending: int = Field(0, description="Callbacks waiting for delivery.")
    batches_dropped: int = Field(0, description="Callbacks given up on (see last_error).")
    callbacks: CallbackStats = Field(
        default_factory=CallbackStats,
        description="Callback deliveries, retries and drops (as the PoC engine's /status).",
    )
    model_builds: int = Field(0, description="Models built since start (re-inits reuse them).")
    model_build_seconds: float | None = Field(None, description="Time the model took to build.")
    last_error: str | None = Field(None, description="Most recent error, worker or delivery.")


class PowAccepted(BaseModel):
    """Answer to POST /pow/validate: the batch is queued for recomputation."""

    status: str = Field("OK", description="OK when queued.")
    queued: int = Field(description="Batches waiting for validation, this one included.")


class PowServiceStatus(ServiceStatus[PowStatus]):
    """The PoW service in `GET /api/v1/state`; its progress is the PoW status body."""
