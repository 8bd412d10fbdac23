"""Bodies of the PoC v2 engine routes and callbacks (SPEC §4.1, the network node's §4.3 bodies).

Contract bodies are lenient on unknown keys (the network node's versions differ) and strict on
values: a field out of range is refused with an error that names it.

Each request is defined once, in two layers. `*Body` holds the fields the network node sends,
with their bounds, and keeps unknown keys: the node's fan-out validates that much and forwards the
rest untouched. The engine's `*Request` subclass adds what only the engine reads and the checks
across fields, so their refusals come from the engine and the node passes them through.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlnode.pow.poc.artifacts import MAX_VECTOR_VALUES
from mlnode.pow.poc.validation import StatTest

MAX_SEQ_LEN = 32_768
MAX_K_DIM = MAX_VECTOR_VALUES
MAX_DECODE_STEPS = 4096
MAX_BATCH_SIZE = 4096
#: Nonces one `/generate` may carry (gonka's queue cap, `POC_MAX_QUEUED_NONCES`).
MAX_NONCES = 100_000
MAX_NONCE = 2**63 - 1
#: Caps on one received artifact's fields. They are far above any legitimate artifact, so that a
#: malformed one inside them counts as a mismatch in the verdict instead of voiding the request.
MAX_ARTIFACT_TEXT = 8192
MAX_ARTIFACT_STEPS = 8192
MAX_TEXT = 1024
MAX_URL = 2048
SCHEME_PREFILL: Final = "prefill"
SCHEME_DECODE: Final = "decode"


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Relayed(BaseModel):
    """A body as the node relays it: unknown keys are kept, for the engine (or a newer one)."""

    model_config = ConfigDict(extra="allow")


class PocParamsBody(_Relayed):
    """`params` as the node checks it: the served model and the sequence length."""

    model: str = Field(min_length=1, max_length=MAX_TEXT, description="Served model name.")
    seq_len: int = Field(ge=1, le=MAX_SEQ_LEN, description="Input positions per nonce.")


class PocParams(PocParamsBody):
    """`params`: the served model and the shape of the proof.

    The decode scheme is chosen by `scheme: "decode"` (plugin) or `decode: true` (network node),
    and needs `max_tokens >= 1`; `scheme` is normalised to `prefill` or `decode`.
    """

    model_config = ConfigDict(extra="ignore")

    k_dim: int = Field(12, ge=2, le=MAX_K_DIM, description="Values per vector artifact.")
    scheme: Literal["prefill", "decode"] | None = Field(
        None, description="`prefill` (vector artifacts) or `decode` (codebook trajectories)."
    )
    decode: bool | None = Field(
        None, description="The network node's switch for the decode scheme."
    )
    max_tokens: int | None = Field(
        None, ge=0, le=MAX_DECODE_STEPS, description="Decode steps after the prefill step."
    )

    @model_validator(mode="after")
    def _one_scheme(self) -> Self:
        wants_decode = self.scheme == SCHEME_DECODE or self.decode is True
        if self.scheme == SCHEME_PREFILL and self.decode is True:
            raise ValueError("params.scheme is 'prefill' but params.decode is true")
        if wants_decode and not self.max_tokens:
            raise ValueError("params.max_tokens must be at least 1 for the decode scheme")
        self.scheme = SCHEME_DECODE if wants_decode else SCHEME_PREFILL
        return self

    @property
    def is_decode(self) -> bool:
        """True for the decode (`k_points_steps`) scheme."""
        return self.scheme == SCHEME_DECODE


class _Block(_Relayed):
    block_hash: str = Field(min_length=1, max_length=MAX_TEXT, description="Block hash (seeds).")
    block_height: int = Field(ge=0, description="Block height (reported back).")
    public_key: str = Field(
        min_length=1, max_length=MAX_TEXT, description="The prover's key (seeds its nonces)."
    )
    node_id: int = Field(ge=0, description="Index of the prover's node.")
    url: str | None = Field(
        None,
        max_length=MAX_URL,
        pattern=r"^https?://",
        description="Callback base URL (`/generated`, `/validated` are appended).",
    )
    poc_stronger_rng: bool = Field(False, description="Use the 8-segment sha256 input stream.")


class PocInitGenerateBody(_Block):
    """`/init/generate` as the network node sends it (Go `PoCInitGenerateRequestV2`)."""

    node_count: int = Field(ge=1, description="Nodes sharing the nonce space.")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Nonces per forward pass; absent: the engine's own (MLNODE_POC_BATCH_SIZE).",
    )
    params: PocParamsBody = Field(description="Model and proof shape.")


class PocInitGenerateRequest(PocInitGenerateBody):
    """POST /init/generate: mine this node's share of the nonce space until stopped."""

    model_config = ConfigDict(extra="ignore")

    group_id: int = Field(0, ge=0, description="This engine's index among the node's engines.")
    n_groups: int = Field(1, ge=1, description="Engines of the node sharing its share.")
    params: PocParams = Field(description="Model and proof shape.")

    @model_validator(mode="after")
    def _inside_share(self) -> Self:
        if self.node_id >= self.node_count:
            raise ValueError(f"node_id {self.node_id} must be below node_count {self.node_count}")
        if self.group_id >= self.n_groups:
            raise ValueError(f"group_id {self.group_id} must be below n_groups {self.n_groups}")
        return self

    def nonce(self, x: int) -> int:
        """The x-th nonce of this engine (SPEC §2.10)."""
        return self.node_id + self.group_id * self.node_count + x * self.n_groups * self.node_count


class PocArtifact(_Contract):
    """One nonce's artifact: a vector (prefill) or a codebook trajectory (decode)."""

    nonce: int = Field(ge=0, le=MAX_NONCE, description="The nonce.")
    vector_b64: str = Field(
        "", max_length=MAX_ARTIFACT_TEXT, description="fp16 little-endian vector, base64."
    )
    k_points_steps: list[Annotated[int, Field(ge=-MAX_NONCE, le=MAX_NONCE)]] | None = Field(
        None, max_length=MAX_ARTIFACT_STEPS, description="Codebook index of each decode step."
    )


class PocValidation(_Contract):
    """`validation`: the prover's artifacts to judge."""

    artifacts: list[PocArtifact] = Field(max_length=MAX_NONCES, description="Received artifacts.")


class PocGenerateBody(_Block):
    """`/generate` as the network node sends it (Go `PoCGenerateRequestV2`)."""

    node_count: int = Field(0, ge=0, description="Nodes of the prover (not used to compute).")
    nonces: list[Annotated[int, Field(ge=0, le=MAX_NONCE)]] = Field(
        min_length=1, max_length=MAX_NONCES, description="Nonces to compute, distinct."
    )
    params: PocParamsBody = Field(description="Model and proof shape.")
    wait: bool = Field(False, description="Answer with the result instead of queueing.")


class PocGenerateRequest(PocGenerateBody):
    """POST /generate: compute given nonces; judge them when `validation` is given."""

    model_config = ConfigDict(extra="ignore")

    params: PocParams = Field(description="Model and proof shape.")
    batch_size: int | None = Field(
        None,
        ge=0,
        le=MAX_BATCH_SIZE,
        description="Nonces per forward (0: all); absent: the engine's own batch size.",
    )
    validation: PocValidation | None = Field(None, description="Artifacts to validate.")
    stat_test: StatTest | None = Field(None, description="Validation thresholds.")

    @model_validator(mode="after")
    def _consistent_nonces(self) -> Self:
        if len(set(self.nonces)) != len(self.nonces):
            raise ValueError("nonces holds duplicates")
        if self.validation is not None:
            received = [a.nonce for a in self.validation.artifacts]
            if len(set(received)) != len(received):
                raise ValueError("validation.artifacts holds a nonce twice")
            if set(received) != set(self.nonces):
                raise ValueError("validation.artifacts must carry exactly the nonces of `nonces`")
        return self


class PocEncoding(BaseModel):
    """Wire format of `vector_b64`."""

    dtype: Literal["f16"] = Field("f16", description="IEEE half precision.")
    k_dim: int = Field(description="Values per vector.")
    endian: Literal["le"] = Field("le", description="Byte order.")


class PocArtifactOut(BaseModel):
    """An artifact as the engine sends it."""

    nonce: int = Field(description="The nonce.")
    vector_b64: str = Field(description="fp16 LE vector, base64 ('' in the decode scheme).")
    k_points_steps: list[int] | None = Field(None, description="Decode trajectory, when decode.")


class GenerateStatus(StrEnum):
    """State of a `/generate` job."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class PocGenerateQueued(BaseModel):
    """`/generate` with wait=false."""

    status: Literal["queued"] = Field("queued", description="Always 'queued'.")
    request_id: str = Field(description="Id for GET /generate/{request_id}.")
    queued_count: int = Field(description="Nonces queued by this request.")


class PocGenerateResult(BaseModel):
    """`/generate` with wait=true and no validation, or a finished job's artifacts."""

    status: GenerateStatus = Field(GenerateStatus.COMPLETED, description="'completed'.")
    request_id: str = Field(description="The job's id.")
    artifacts: list[PocArtifactOut] = Field(
        description="Computed artifacts (NaN nonces and non-finite decode trajectories omitted)."
    )
    encoding: PocEncoding = Field(description="Wire format of vector_b64.")


class PocValidationResult(BaseModel):
    """`/generate` with validation: the verdict (SPEC §2.11)."""

    status: GenerateStatus = Field(GenerateStatus.COMPLETED, description="'completed'.")
    request_id: str = Field(description="The job's id.")
    n_total: int = Field(description="Nonces scored (the request's, less the excluded).")
    n_mismatch: int = Field(description="Scored nonces whose received artifact failed.")
    mismatch_nonces: list[int] = Field(description="Those nonces, ascending.")
    p_value: float | None = Field(
        description="P[>= n_mismatch mismatches | honest prover]; null when there is no verdict."
    )
    fraud_detected: bool | None = Field(
        description="p_value < fraud_threshold; null when there is no verdict (never 'valid')."
    )
    n_nan_steps: int = Field(0, description="Decode steps excluded as non-finite.")
    n_excluded: int = Field(0, description="Nonces this validator could not score.")
    excluded_nonces: list[int] = Field(default_factory=list, description="Those nonces, ascending.")
    no_verdict: str | None = Field(
        None, description="Why there is no verdict (more than 10% of the nonces unscored)."
    )


class PocJobStatus(BaseModel):
    """GET /generate/{request_id}: state, then the result fields or the error."""

    status: GenerateStatus = Field(description="queued, running, completed or failed.")
    request_id: str = Field(description="The job's id.")
    artifacts: list[PocArtifactOut] | None = Field(None, description="Artifacts, when completed.")
    encoding: PocEncoding | None = Field(None, description="Wire format, with artifacts.")
    n_total: int | None = Field(None, description="Validation: nonces in the request.")
    n_mismatch: int | None = Field(None, description="Validation: failed nonces.")
    mismatch_nonces: list[int] | None = Field(None, description="Validation: those nonces.")
    p_value: float | None = Field(None, description="Validation: binomial p-value.")
    fraud_detected: bool | None = Field(
        None, description="Validation: verdict (null with `no_verdict` when none)."
    )
    n_nan_steps: int | None = Field(None, description="Validation: non-finite decode steps.")
    n_excluded: int | None = Field(None, description="Validation: nonces not scored.")
    excluded_nonces: list[int] | None = Field(None, description="Validation: those nonces.")
    no_verdict: str | None = Field(None, description="Validation: why there is no verdict.")
    error: str | None = Field(None, description="Why the job failed.")

    def verdict(self) -> dict[str, Any]:
        """Validation fields as the `/validated` callback and the wait=true answer carry them."""
        return {
            "n_total": self.n_total or 0,
            "n_mismatch": self.n_mismatch or 0,
            "mismatch_nonces": self.mismatch_nonces or [],
            "p_value": self.p_value,
            "fraud_detected": self.fraud_detected,
            "n_nan_steps": self.n_nan_steps or 0,
            "n_excluded": self.n_excluded or 0,
            "excluded_nonces": self.excluded_nonces or [],
            "no_verdict": self.no_verdict,
        }


class MiningPhase(StrEnum):
    """Engine PoC state (`/status`)."""

    IDLE = "IDLE"
    GENERATING = "GENERATING"
    STOPPED = "STOPPED"


class PocStatusConfig(BaseModel):
    """The mining job's parameters."""

    block_hash: str = Field(description="Block hash.")
    block_height: int = Field(description="Block height.")
    public_key: str = Field(description="Prover key.")
    node_id: int = Field(description="Node index.")
    node_count: int = Field(description="Node count.")
    group_id: int = Field(description="Engine index.")
    n_groups: int = Field(description="Engine count.")
    seq_len: int = Field(description="Input positions per nonce.")
    k_dim: int = Field(description="Values per vector artifact.")


class PocStatusStats(BaseModel):
    """Mining counters."""

    total_processed: int = Field(description="Nonces computed since init.")
    nonces_per_second: float = Field(description="Recent rate.")


class PocStatus(BaseModel):
    """GET /status."""

    status: MiningPhase = Field(description="IDLE or GENERATING.")
    config: PocStatusConfig | None = Field(None, description="Mining parameters while mining.")
    stats: PocStatusStats | None = Field(None, description="Counters while mining.")


class PowPhaseBody(BaseModel):
    """`pow_status` of init/stop answers."""

    status: MiningPhase = Field(description="Phase after the call.")


class PocInitGenerateResponse(BaseModel):
    """Answer to /init/generate."""

    status: Literal["OK"] = Field("OK", description="'OK' once mining started.")
    pow_status: PowPhaseBody = Field(
        default_factory=lambda: PowPhaseBody(status=MiningPhase.GENERATING),
        description="{'status': 'GENERATING'}.",
    )


class PocStopResponse(BaseModel):
    """Answer to /stop."""

    status: Literal["OK"] = Field("OK", description="'OK' once stopped.")
    pow_status: PowPhaseBody = Field(
        default_factory=lambda: PowPhaseBody(status=MiningPhase.STOPPED),
        description="{'status': 'STOPPED'}.",
    )


class PocVersions(_Relayed):
    """GET /versions, relayed by the node's `/inference/pow/versions` (with what a newer one adds).

    The engine always fills every field; the defaults stand for an engine without PoC routes.
    """

    vllm_version: str | None = Field(None, description="vLLM version of the engine.")
    gonka_poc_version: str | None = Field(None, description="Version of the PoC implementation.")
    poc_validation_inference: bool = Field(
        False, description="True when the engine keeps serving inference while it validates PoC."
    )


class GeneratedCallback(BaseModel):
    """Body POSTed to `{url}/generated` (mining; `request_id` for queued jobs)."""

    request_id: str | None = Field(None, description="The queued job, absent for mining.")
    public_key: str = Field(description="Prover key.")
    block_hash: str = Field(description="Block hash.")
    block_height: int = Field(description="Block height.")
    node_id: int = Field(description="Prover's node index.")
    artifacts: list[PocArtifactOut] = Field(description="Artifacts of this delivery.")
    encoding: PocEncoding = Field(description="Wire format of vector_b64.")


class ValidatedCallback(BaseModel):
    """Body POSTed to `{url}/validated` for a queued validation."""

    request_id: str = Field(description="The queued job.")
    block_hash: str = Field(description="Block hash.")
    block_height: int = Field(description="Block height.")
    public_key: str = Field(description="The prover's key.")
    node_id: int = Field(description="The prover's node index.")
    n_total: int = Field(description="Nonces scored.")
    n_mismatch: int = Field(description="Failed nonces.")
    mismatch_nonces: list[int] = Field(description="Those nonces, ascending.")
    p_value: float | None = Field(description="Binomial p-value; null without a verdict.")
    fraud_detected: bool | None = Field(description="Verdict; null without one (never 'valid').")
    n_nan_steps: int = Field(0, description="Decode steps excluded as non-finite.")
    n_excluded: int = Field(0, description="Nonces the validator could not score.")
    excluded_nonces: list[int] = Field(default_factory=list, description="Those nonces.")
    no_verdict: str | None = Field(None, description="Why there is no verdict.")
