"""PoC v2 validation (SPEC §2.11, §3): per-nonce mismatches and the binomial fraud test."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mlnode.pow.poc.artifacts import decode_vector

#: Margin SPEC §3 gives a claimed codebook index outside 0..n_points-1.
OUT_OF_RANGE_MARGIN = 2.0
#: Above this share of unscored nonces there is no verdict (SPEC §2.13; the network node abstains).
MAX_EXCLUDED_FRACTION = 0.10


class StatTest(BaseModel):
    """Thresholds of a validation (`stat_test`); defaults are the plugin/MLNode server's.

    The network node names the fraud cutoff `p_value_threshold`; both names are read here.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    dist_threshold: float = Field(
        0.02,
        ge=0,
        le=4,
        allow_inf_nan=False,
        description="L2 distance (vector scheme) or score margin (decode scheme) above which a "
        "nonce mismatches.",
    )
    p_mismatch: float = Field(
        0.001,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Probability that an honest nonce mismatches (binomial null hypothesis).",
    )
    fraud_threshold: float = Field(
        0.01,
        gt=0,
        le=1,
        allow_inf_nan=False,
        validation_alias=AliasChoices("fraud_threshold", "p_value_threshold"),
        description="Fraud when the p-value is below this (`p_value_threshold` in the network "
        "node's body).",
    )


@dataclass(frozen=True)
class ValidationOutcome:
    """Verdict over the scored nonces of a batch (SPEC §2.13).

    `p_value` and `fraud_detected` are None when too many nonces were unscored to judge; then
    `no_verdict` says why.
    """

    n_total: int
    n_mismatch: int
    mismatch_nonces: list[int]
    p_value: float | None
    fraud_detected: bool | None
    n_nan_steps: int = 0
    excluded_nonces: list[int] = field(default_factory=list)
    no_verdict: str | None = None

    @property
    def n_excluded(self) -> int:
        """Nonces the validator could not score."""
        return len(self.excluded_nonces)


def binomial_p_value(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p): exact one-sided test (scipy's binomtest "greater").

    Terms are summed in log space over the smaller side, so large n neither overflows nor loses
    the tail; the result is within ~1e-12 relative of scipy's for n up to 10^6.
    """
    if n < 0 or not 0 <= p <= 1:
        raise ValueError(f"need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def term(i: int) -> float:
        log_c = log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        return math.exp(log_c + i * log_p + (n - i) * log_q)

    if k > n * p:
        return min(1.0, _tail_sum(term, range(k, n + 1)))
    return max(0.0, 1.0 - _tail_sum(term, range(k - 1, -1, -1)))


def _tail_sum(term: Callable[[int], float], indices: range) -> float:
    """Sum of terms that shrink along `indices` (away from the mode), stopped once negligible."""
    terms: list[float] = []
    for i in indices:
        t = term(i)
        terms.append(t)
        if t <= terms[0] * 1e-18 and len(terms) > 1:
            break
    return math.fsum(terms)


def vector_mismatch(
    computed: torch.Tensor, received: torch.Tensor | None, k_dim: int, dist: float
) -> bool:
    """Whether a received vector fails: malformed, not k_dim values, non-finite, or too far."""
    if received is None or received.numel() != k_dim or not bool(torch.isfinite(received).all()):
        return True
    return float(torch.linalg.vector_norm(computed - received)) > dist


def verdict(n_mismatch: int, n_total: int, stat: StatTest) -> tuple[float, bool]:
    """(p_value, fraud_detected) of `n_mismatch` out of `n_total` under `stat`."""
    if n_total <= 0:
        return 1.0, False
    p_value = binomial_p_value(n_mismatch, n_total, stat.p_mismatch)
    return p_value, p_value < stat.fraud_threshold


def judge(
    mismatch_nonces: list[int],
    scored: int,
    excluded_nonces: list[int],
    stat: StatTest,
    n_nan_steps: int = 0,
) -> ValidationOutcome:
    """The outcome over `scored` nonces, or no verdict past `MAX_EXCLUDED_FRACTION` unscored."""
    excluded = sorted(excluded_nonces)
    requested = scored + len(excluded)
    if requested and len(excluded) > MAX_EXCLUDED_FRACTION * requested:
        reason = (
            f"{len(excluded)} of {requested} nonces could not be scored by this validator "
            f"(more than {MAX_EXCLUDED_FRACTION:.0%}): no verdict"
        )
        return ValidationOutcome(
            scored, len(mismatch_nonces), mismatch_nonces, None, None, n_nan_steps, excluded, reason
        )
    p_value, fraud = verdict(len(mismatch_nonces), scored, stat)
    return ValidationOutcome(
        scored, len(mismatch_nonces), mismatch_nonces, p_value, fraud, n_nan_steps, excluded
    )


def validate_vectors(
    computed: Mapping[int, str],
    received: Mapping[int, str],
    k_dim: int,
    stat: StatTest,
    nonces: Sequence[int],
) -> ValidationOutcome:
    """Judge received vector artifacts of `nonces` against recomputed ones (SPEC §2.11, §2.13).

    A nonce the validator could not compute, or whose own vector is not finite, is excluded: it is
    neither a mismatch nor counted in `n_total`. A missing or malformed received vector mismatches.
    """
    mismatches, excluded, unique = [], [], sorted(set(nonces))
    for nonce in unique:
        own = decode_vector(computed[nonce]) if nonce in computed else None
        if nonce in computed and own is None:
            raise ValueError(f"computed artifact of nonce {nonce} is not a valid vector")
        if own is None or not bool(torch.isfinite(own).all()):
            excluded.append(nonce)
            continue
        text = received.get(nonce)
        theirs = decode_vector(text) if text is not None else None
        if vector_mismatch(own, theirs, k_dim, stat.dist_threshold):
            mismatches.append(nonce)
    return judge(mismatches, len(unique) - len(excluded), excluded, stat)


@dataclass(frozen=True)
class TrajectoryCheck:
    """Teacher-forced comparison of one nonce's decode trajectory (SPEC §3)."""

    mismatch: bool
    n_disagree: int
    max_margin: float
    n_nan_steps: int = 0


def check_trajectory(
    own_scores: torch.Tensor, claimed: Sequence[int] | None, tau: float, expected_steps: int
) -> TrajectoryCheck:
    """Compare the validator's per-step codebook scores `[T, P]` with the prover's indices.

    A step disagrees when the validator's own argmax (finite scores only) differs from the claim;
    its margin is `max(s) - s[claimed]` (2.0 for a claim outside 0..P-1). The nonce mismatches when
    a disagreement's margin exceeds `tau`, or when the trajectory is missing or of another length.
    """
    if own_scores.shape[0] != expected_steps:
        raise ValueError(f"computed {own_scores.shape[0]} steps, expected {expected_steps}")
    if claimed is None or len(claimed) != expected_steps:
        return TrajectoryCheck(True, 0, OUT_OF_RANGE_MARGIN)
    n_points = own_scores.shape[1]
    n_disagree, n_nan, max_margin, mismatch = 0, 0, 0.0, False
    for step, k_ref in enumerate(claimed):
        scores = own_scores[step]
        if not bool(torch.isfinite(scores).all()):
            n_nan += 1
            continue
        if int(torch.argmax(scores)) == k_ref:
            continue
        n_disagree += 1
        valid = 0 <= k_ref < n_points
        margin = float(scores.max() - scores[k_ref]) if valid else OUT_OF_RANGE_MARGIN
        max_margin = max(max_margin, margin)
        mismatch = mismatch or margin > tau
    return TrajectoryCheck(mismatch, n_disagree, max_margin, n_nan)


def validate_trajectories(
    own_scores: Mapping[int, torch.Tensor],
    received: Mapping[int, Sequence[int] | None],
    stat: StatTest,
    nonces: Sequence[int],
    max_tokens: int,
) -> ValidationOutcome:
    """Judge received `k_points_steps` of `nonces` from teacher-forced scores (tau: dist_threshold).

    A nonce without own scores, or whose every own step is non-finite, is excluded (SPEC §2.13);
    single non-finite steps are skipped and counted in `n_nan_steps` (SPEC §3).
    """
    mismatches, excluded, n_nan, unique = [], [], 0, sorted(set(nonces))
    for nonce in unique:
        scores = own_scores.get(nonce)
        if scores is None or not bool(torch.isfinite(scores).all(dim=-1).any()):
            excluded.append(nonce)
            continue
        check = check_trajectory(scores, received.get(nonce), stat.dist_threshold, max_tokens + 1)
        n_nan += check.n_nan_steps
        if check.mismatch:
            mismatches.append(nonce)
    return judge(mismatches, len(unique) - len(excluded), excluded, stat, n_nan)
