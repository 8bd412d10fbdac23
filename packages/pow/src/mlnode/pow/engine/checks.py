"""Request checks against the served model and the operator's settings (SPEC §2.12).

Pure functions: a request either becomes a `ProofShape` the runner computes, or a `PocHttpError`
naming the field (409 for another model or a pinned value, 422 for a value out of range).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlnode.pow.engine.errors import PocHttpError, conflict, invalid
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.poc.decode import Codebook
from mlnode.pow.poc.schemas import PocParams


@dataclass(frozen=True)
class EngineFacts:
    """What the checks need to know about this engine."""

    served_models: tuple[str, ...]
    architecture: str
    hidden: int
    max_model_len: int
    max_batched_tokens: int = 8192
    max_num_seqs: int = 256
    unsupported: str | None = None
    decode_unsupported: str | None = None
    codebook: Codebook | None = None
    codebook_error: str | None = None


@dataclass(frozen=True)
class ProofShape:
    """Everything a chunk of one request shares."""

    block_hash: str
    public_key: str
    seq_len: int
    k_dim: int
    stronger_rng: bool
    max_tokens: int
    chunk: int
    codebook_sha256: str | None

    @property
    def decode(self) -> bool:
        """True for the decode (`k_points_steps`) scheme."""
        return self.max_tokens > 0


def _check_pins(params: PocParams, settings: PocEngineSettings) -> None:
    pins = {
        "seq_len": (settings.pin_seq_len, params.seq_len),
        "k_dim": (settings.pin_k_dim, params.k_dim),
        "max_tokens": (settings.pin_max_tokens, params.max_tokens if params.is_decode else None),
    }
    for field, (pinned, given) in pins.items():
        if pinned is not None and given is not None and given != pinned:
            raise conflict(
                f"params.{field} is {given}, but this engine is pinned to {pinned}",
                f"params.{field}",
            )


def _check_decode(params: PocParams, facts: EngineFacts) -> str | None:
    """sha256 of the codebook a decode request will use (None for the vector scheme)."""
    if not params.is_decode:
        return None
    if facts.codebook is None:
        reason = facts.codebook_error or (
            "no codebook is configured (MLNODE_POC_CODEBOOK_PATH and MLNODE_POC_CODEBOOK_SHA256)"
        )
        raise conflict(f"the decode scheme is unavailable: {reason}", "params.decode")
    if facts.hidden < facts.codebook.dim:
        raise invalid(
            f"the decode scheme needs hidden size >= {facts.codebook.dim}; "
            f"{facts.architecture} has {facts.hidden}",
            "params.decode",
        )
    if facts.decode_unsupported is not None:
        raise conflict(
            f"the decode scheme is unavailable: {facts.decode_unsupported}", "params.decode"
        )
    return facts.codebook.sha256


def check_params(
    params: PocParams,
    facts: EngineFacts,
    settings: PocEngineSettings,
) -> None:
    """Refuse a request this engine cannot answer as asked."""
    if params.model not in facts.served_models:
        raise conflict(
            f"params.model {params.model!r} is not the served model "
            f"({', '.join(facts.served_models)})",
            "params.model",
        )
    if facts.unsupported is not None:
        raise conflict(f"PoC is not supported on this model: {facts.unsupported}", "params.model")
    _check_pins(params, settings)
    longest = min(settings.max_seq_len, facts.max_model_len)
    if params.seq_len > longest:
        raise invalid(f"params.seq_len {params.seq_len} exceeds {longest}", "params.seq_len")
    steps = (params.max_tokens or 0) if params.is_decode else 0
    if params.seq_len + steps > facts.max_model_len:
        raise invalid(
            f"params.seq_len + params.max_tokens = {params.seq_len + steps} exceeds the model "
            f"length {facts.max_model_len}",
            "params.max_tokens",
        )
    if not params.is_decode and params.k_dim > facts.hidden:
        raise invalid(
            f"params.k_dim {params.k_dim} exceeds the hidden size {facts.hidden}", "params.k_dim"
        )


def default_batch_size(facts: EngineFacts, settings: PocEngineSettings) -> int:
    """`MLNODE_POC_BATCH_SIZE`, else the engine's own limit on sequences per step."""
    return settings.batch_size or facts.max_num_seqs


def proof_shape(
    params: PocParams,
    *,
    block_hash: str,
    public_key: str,
    stronger_rng: bool,
    batch_size: int | None,
    n_nonces: int | None,
    facts: EngineFacts,
    settings: PocEngineSettings,
) -> ProofShape:
    """Check a request and fix its chunking, within the row cap.

    Nonces per chunk: the request's `batch_size` (0: all of a `/generate`'s nonces), else the
    engine's own (`default_batch_size`), as gonka's engines do since the network node stopped
    sending one (SPEC §2.13).
    """
    check_params(params, facts, settings)
    sha = _check_decode(params, facts)
    steps = (params.max_tokens or 0) if params.is_decode else 0
    if batch_size is None:
        wanted = default_batch_size(facts, settings)
    else:
        wanted = batch_size or n_nonces or default_batch_size(facts, settings)
    rows = settings.max_chunk_tokens or facts.max_batched_tokens
    rows_cap = max(1, rows // (params.seq_len + steps))
    return ProofShape(
        block_hash=block_hash,
        public_key=public_key,
        seq_len=params.seq_len,
        k_dim=params.k_dim,
        stronger_rng=stronger_rng,
        max_tokens=steps,
        chunk=max(1, min(wanted, rows_cap)),
        codebook_sha256=sha,
    )


def nonce_sets_differ(raw: object) -> bool:
    """True when a raw `/generate` body's `validation.artifacts` nonces are not `nonces` (400).

    Checked before the schema so that this case answers 400 (SPEC §2.11) rather than 422.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("validation"), dict):
        return False
    artifacts = raw["validation"].get("artifacts")
    nonces = raw.get("nonces")
    if not isinstance(artifacts, list) or not isinstance(nonces, list):
        return False
    received = [a.get("nonce") for a in artifacts if isinstance(a, dict)]
    try:
        return set(received) != set(nonces)
    except TypeError:  # unhashable values: the schema names them
        return False


__all__ = [
    "EngineFacts",
    "PocHttpError",
    "ProofShape",
    "check_params",
    "default_batch_size",
    "nonce_sets_differ",
    "proof_shape",
]
