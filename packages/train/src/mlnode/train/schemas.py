"""Request and status bodies of /api/v1/train."""

from __future__ import annotations

from typing import Any, Self, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlnode.common.lifecycle import ServiceStatus
from mlnode.train.diloco.aggregation import Aggregation
from mlnode.train.diloco.math import Compression
from mlnode.train.diloco.sparse import MAX_CHUNK

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """The model to train: a local Hugging Face directory, or a config to build one from scratch."""

    path: str | None = Field(None, description="Local Hugging Face model directory (safetensors).")
    config: dict[str, Any] | None = Field(
        None,
        description="transformers config kwargs with `model_type` (default llama), e.g. "
        '{"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 256}.',
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.path is None) == (self.config is None):
            raise ValueError("model needs exactly one of 'path' (a local directory) or 'config'")
        return self


class DatasetSpec(_Strict):
    """Local training data."""

    path: str = Field(
        description="A .txt file, a .jsonl file, or a token file (.npy, .safetensors)."
    )
    text_field: str = Field("text", description="Field holding the text in each .jsonl line.")
    seq_len: int = Field(128, ge=8, le=65536, description="Tokens per training sequence.")
    eval_fraction: float = Field(
        0.05, ge=0.0, lt=0.5, description="Tail of the corpus held out to report eval loss."
    )


class TrainPeer(_Strict):
    """Another worker of the task, registered through /api/v1/peers."""

    peer_id: str = Field(description="The id under which /api/v1/peers knows this worker.")
    rank: int = Field(ge=0, description="Its rank in the task (0 .. world_size - 1).")
    address: str | None = Field(
        None, description="host:port of its transport, informative (registration carries it)."
    )


class RobustConfig(_Strict):
    """Defences against peers that are authenticated but not trusted (Byzantine workers)."""

    max_faulty: int | None = Field(
        None,
        ge=0,
        description="f: Byzantine workers to tolerate. A peer's state is taken only when f + 1 "
        "workers vouch for its hash; trimmed mean drops f per end, Krum assumes f. Default "
        "floor((world_size - 1) / 3); 0 trusts every peer.",
    )
    aggregation: Aggregation = Field(
        Aggregation.CENTERED_CLIP,
        description="How pseudo-gradients combine: mean, median (coordinate-wise), trimmed_mean, "
        "centered_clip (clipped around the median) or krum (Multi-Krum, keeps n - f).",
    )
    clip_factor: float = Field(
        1.0, gt=0, description="centered_clip radius, in medians of the distances to the median."
    )
    gate: bool = Field(
        True,
        description="Score each worker's pseudo-gradient by the loss change it causes on a "
        "held-out batch and aggregate only the best (keeps whole pseudo-gradients in memory).",
    )
    gate_keep: int | None = Field(
        None, ge=1, description="How many the gate keeps; default all but max_faulty."
    )
    gate_batch: int = Field(
        8, ge=1, le=1024, description="Held-out sequences the gate scores on (from the eval tail)."
    )


class DilocoConfig(_Strict):
    """Outer loop settings (DiLoCo)."""

    inner_steps: int = Field(50, ge=1, description="H: inner optimizer steps between syncs.")
    outer_lr: float = Field(0.7, gt=0, description="Outer SGD learning rate.")
    outer_momentum: float = Field(0.9, ge=0, lt=1, description="Outer SGD momentum.")
    nesterov: bool = Field(True, description="Nesterov momentum for the outer SGD.")
    compression: Compression = Field(
        Compression.NONE,
        description="Pseudo-gradient encoding: none, fp16, int8 or sparseloco (both with error "
        "feedback).",
    )
    sparse_density: float = Field(
        1 / 64,
        gt=0,
        le=0.5,
        description="sparseloco: share of each chunk's values sent (top-k by magnitude).",
    )
    sparse_chunk: int = Field(
        4096, ge=8, le=MAX_CHUNK, description="sparseloco: values per top-k chunk."
    )
    sparse_error_decay: float = Field(
        0.8,
        ge=0,
        le=1,
        description="sparseloco: factor on the error-feedback residual before each round's "
        "top-k (SparseLoCo's beta; 1 keeps all of it). 0.8 beat 1, 0.9 and 0.95 at every "
        "density tried in bench/diloco_convergence.py.",
    )
    round_timeout_s: float = Field(
        300.0, gt=0, description="How long a worker waits for peers' pseudo-gradients each round."
    )
    chunk_timeout_s: float = Field(60.0, gt=0, description="Wait for each later chunk of a round.")
    chunk_mb: float = Field(16.0, gt=0, description="Pseudo-gradient bytes per exchanged chunk.")
    robust: RobustConfig = Field(
        default_factory=lambda: RobustConfig.model_validate({}),
        description="Defences against Byzantine peers.",
    )


class OptimConfig(_Strict):
    """Inner AdamW settings."""

    lr: float = Field(4e-4, gt=0, description="Peak inner learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps of the inner lr.")
    total_steps: int = Field(
        1000, ge=1, description="Inner steps of the whole job (cosine to 10%)."
    )
    batch_size: int = Field(8, ge=1, description="Sequences per inner step.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Sequences per forward pass (gradient accumulation); default all."
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null for none.")

    @model_validator(mode="after")
    def _micro_divides(self) -> Self:
        micro = self.micro_batch_size or self.batch_size
        if self.batch_size % micro:
            raise ValueError("optim.micro_batch_size must divide optim.batch_size")
        return self


class CheckpointConfig(_Strict):
    """Where and how often to checkpoint."""

    dir: str | None = Field(
        None, description="Checkpoint directory; default <state_dir>/train/<task_id>."
    )
    every_outer_steps: int = Field(1, ge=1, description="Checkpoint every N outer steps.")
    keep: int = Field(2, ge=1, description="How many checkpoints to keep.")


class TrainRequest(_Strict):
    """Body of POST /api/v1/train/start."""

    task_id: str = Field(pattern=TASK_ID_PATTERN, description="Task id; scopes peers and tags.")
    model: ModelSpec = Field(description="Model to train.")
    dataset: DatasetSpec = Field(description="Training data.")
    rank: int = Field(0, ge=0, description="This worker's rank.")
    world_size: int = Field(1, ge=1, description="Number of workers.")
    peers: list[TrainPeer] = Field(
        default_factory=list, max_length=4096, description="The other workers."
    )
    diloco: DilocoConfig = Field(
        default_factory=lambda: DilocoConfig.model_validate({}), description="Outer loop settings."
    )
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig.model_validate({}), description="Inner optimizer."
    )
    checkpoint: CheckpointConfig = Field(
        default_factory=lambda: CheckpointConfig.model_validate({}),
        description="Checkpoint settings.",
    )
    seed: int = Field(0, description="Seed of initialisation and data order.")
    master_addr: str | None = Field(
        None, description="Rank 0's address, from a legacy body (informative)."
    )

    @model_validator(mode="after")
    def _consistent_world(self) -> Self:
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        ranks = sorted(p.rank for p in self.peers)
        expected = sorted(set(range(self.world_size)) - {self.rank})
        if ranks != expected:
            raise ValueError(
                f"peers must name every other rank once: expected ranks {expected}, got {ranks}"
            )
        if len({p.peer_id for p in self.peers}) != len(self.peers):
            raise ValueError("peer ids must be unique")
        faulty = self.diloco.robust.max_faulty
        if faulty is not None and faulty >= self.world_size:
            raise ValueError(f"diloco.robust.max_faulty {faulty} must be below world_size")
        return self

    def peer_ranks(self) -> dict[str, int]:
        """Peer id -> rank."""
        return {p.peer_id: p.rank for p in self.peers}


class RobustStatus(BaseModel):
    """`progress.robust` of GET /api/v1/train/status: the job's defences and what they did."""

    max_faulty: int = Field(description="f in force: Byzantine workers tolerated.")
    aggregation: Aggregation = Field(description="The outer step's aggregation rule.")
    gate: bool = Field(description="Whether the loss gate runs.")
    gate_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Last round: loss change of each worker's pseudo-gradient (self: this one).",
    )
    gate_kept: list[str] = Field(
        default_factory=list, description="Last round: the workers the gate let through."
    )
    refused_states: dict[str, str] = Field(
        default_factory=dict, description="Peers whose served state was refused, and why."
    )


class LocalRankInfo(BaseModel):
    """One local rank of this node (rank 0 is the node's own process)."""

    local_rank: int = Field(description="Index among the node's local ranks.")
    device: str = Field(description="Torch device of the rank.")
    pid: int = Field(description="Process id of the rank.")
    log: str | None = Field(description="Log file of a follower process; null for rank 0.")


class LossPoint(BaseModel):
    """Losses of one finished outer round."""

    outer_round: int = Field(description="The round.")
    loss: float | None = Field(description="Mean train loss of its inner steps.")
    eval_loss: float | None = Field(description="Loss on the held-out share, if any.")


class RoundHash(BaseModel):
    """The weights this worker holds after an outer round."""

    outer_round: int = Field(description="The round.")
    sha256: str = Field(description="Hash of the weights.")


class TrainFigures(BaseModel):
    """The figures a training job updates as it runs (assignments are validated)."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    task_id: str = Field(description="Task of the job.")
    rank: int = Field(description="This worker's rank in the task.")
    world_size: int = Field(description="Workers of the task.")
    inner_step: int = Field(0, description="Inner optimizer steps done.")
    outer_round: int = Field(0, description="Outer rounds done.")
    total_rounds: int | None = Field(None, description="Outer rounds the job runs.")
    tokens_per_s: float | None = Field(None, description="Tokens per second, last round.")
    sync_s: float | None = Field(
        None, description="Seconds the last outer step took: exchange, aggregation and vote."
    )
    bytes_sent: int = Field(0, description="Pseudo-gradient payload bytes sent.")
    bytes_received: int = Field(0, description="Pseudo-gradient payload bytes received.")
    peers_alive: list[str] = Field(
        default_factory=list, description="Peers whose pseudo-gradient went into the last round."
    )
    round_failures: dict[str, str] = Field(
        default_factory=dict, description="Peers left out of the last round, with the reason."
    )
    weights_sha256: str | None = Field(None, description="Hash of the current weights.")
    weights_agree: bool | None = Field(
        None, description="Whether the last vote found this worker's weights in the majority."
    )
    resumed_from: int | None = Field(None, description="Round of the checkpoint resumed from.")
    pulled_from: str | None = Field(None, description="Peer whose state was last taken.")
    last_checkpoint: str | None = Field(None, description="Directory of the last checkpoint.")
    local_ranks: list[LocalRankInfo] = Field(
        default_factory=list, description="Local ranks, with several local devices."
    )
    local_weights_agree: bool | None = Field(
        None, description="Whether every local rank held the same weights at the last check."
    )
    robust: RobustStatus | None = Field(
        None, description="The job's defences against faulty peers, and what they did."
    )


class TrainFigureUpdate(TypedDict, total=False):
    """Keyword arguments of `TrainProgress.set`: the fields of `TrainFigures`, checked by mypy."""

    task_id: str
    rank: int
    world_size: int
    inner_step: int
    outer_round: int
    total_rounds: int | None
    tokens_per_s: float | None
    sync_s: float | None
    bytes_sent: int
    bytes_received: int
    peers_alive: list[str]
    round_failures: dict[str, str]
    weights_sha256: str | None
    weights_agree: bool | None
    resumed_from: int | None
    pulled_from: str | None
    last_checkpoint: str | None
    local_ranks: list[LocalRankInfo]
    local_weights_agree: bool | None
    robust: RobustStatus | None


class TrainJobProgress(TrainFigures):
    """`progress` of the training status: the figures and the recent history."""

    loss_history: list[LossPoint] = Field(
        default_factory=list, description="Losses of the recent outer rounds."
    )
    weights_history: list[RoundHash] = Field(
        default_factory=list, description="Weight hashes of the recent outer rounds."
    )


class TrainStatus(ServiceStatus[TrainJobProgress]):
    """GET /api/v1/train/status: the service status; figures are in `progress`."""
