"""PoC v2 validation (SPEC §2.11, §3): vectors-A's examples, binomial test, malformed vectors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from scipy.stats import binomtest

from mlnode.pow.poc.artifacts import encode_vector
from mlnode.pow.poc.validation import (
    OUT_OF_RANGE_MARGIN,
    StatTest,
    binomial_p_value,
    check_trajectory,
    validate_trajectories,
    validate_vectors,
    vector_mismatch,
)


def _examples(vectors: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (ex["case"], ex, result)
        for ex in vectors["validation_examples"]
        for result in ex["results"]
    ]


def test_every_validation_example(poc_vectors: dict[str, Any]) -> None:
    computed = {a["nonce"]: a["vector_b64"] for a in poc_vectors["artifacts_float32"]}
    cases = _examples(poc_vectors)
    assert len(cases) == 13
    for case, example, result in cases:
        received = {a["nonce"]: a["vector_b64"] for a in example["received_artifacts"]}
        stat = StatTest.model_validate(result["stat_test"])
        out = validate_vectors(computed, received, 12, stat, list(received))
        want = result["expected"]
        label = f"{case} / {result['stat_test']['name']}"
        assert out.n_total == want["n_total"], label
        assert out.n_mismatch == want["n_mismatch"], label
        assert out.mismatch_nonces == want["mismatch_nonces"], label
        assert out.p_value == pytest.approx(want["p_value"], rel=1e-9), label
        assert out.fraud_detected is want["fraud_detected"], label


def test_the_network_nodes_threshold_name_is_honoured(poc_vectors: dict[str, Any]) -> None:
    # 13 of 64 mismatches under p_mismatch 0.1 give p = 0.0099: fraud at 0.05 and at 0.01 alike,
    # so the name must be read with a threshold that separates: 0.009 says "no fraud".
    perturbed = poc_vectors["validation_examples"][2]
    computed = {a["nonce"]: a["vector_b64"] for a in poc_vectors["artifacts_float32"]}
    received = {a["nonce"]: a["vector_b64"] for a in perturbed["received_artifacts"]}
    body = {"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.009}
    stat = StatTest.model_validate(body)
    assert stat.fraud_threshold == 0.009
    out = validate_vectors(computed, received, 12, stat, list(range(64)))
    assert out.n_mismatch == 13 and not out.fraud_detected


def test_stat_test_defaults_and_limits() -> None:
    assert StatTest() == StatTest(dist_threshold=0.02, p_mismatch=0.001, fraud_threshold=0.01)
    for field, bad in [
        ("dist_threshold", -1),
        ("p_mismatch", 0),
        ("p_mismatch", 1.5),
        ("fraud_threshold", 0),
        ("dist_threshold", float("nan")),
    ]:
        with pytest.raises(ValidationError) as err:
            StatTest.model_validate({field: bad})
        assert err.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("k", "n", "p", "want"),
    [
        (13, 64, 0.001, 1.2529031150317961e-26),
        (13, 64, 0.1, 0.009919964393703946),
        (2, 4, 0.001, 5.992003e-06),
        (0, 64, 0.1, 1.0),
        (1, 1, 0.5, 0.5),
        (3, 3, 0.5, 0.125),
        (65, 64, 0.1, 0.0),
    ],
)
def test_binomial_p_value_known_values(k: int, n: int, p: float, want: float) -> None:
    assert binomial_p_value(k, n, p) == pytest.approx(want, rel=1e-9, abs=0)


def test_binomial_p_value_against_scipy() -> None:
    for n in (1, 7, 64, 200, 1000, 20_000):
        for p in (0.0005, 0.001, 0.1, 0.5, 0.9):
            for k in sorted(
                {min(n, k) for k in (0, 1, 2, n // 100, int(n * p), int(n * p) + 3, n // 2, n)}
            ):
                want = binomtest(k, n, p, alternative="greater").pvalue
                got = binomial_p_value(k, n, p)
                assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (k, n, p)


def test_binomial_p_value_refuses_impossible_parameters() -> None:
    with pytest.raises(ValueError):
        binomial_p_value(1, 10, 1.5)
    with pytest.raises(ValueError):
        binomial_p_value(1, -1, 0.5)


def test_no_nonce_means_no_fraud() -> None:
    out = validate_vectors({}, {}, 12, StatTest(), [])
    assert (out.n_total, out.n_mismatch, out.p_value, out.fraud_detected) == (0, 0, 1.0, False)


@pytest.mark.parametrize(
    ("received", "mismatch"),
    [
        (None, True),
        (torch.zeros(11), True),
        (torch.zeros(13), True),
        (torch.tensor([float("nan")] + [0.0] * 11), True),
        (torch.tensor([float("inf")] + [0.0] * 11), True),
        (torch.zeros(12), False),
        (torch.full((12,), 0.02 / math.sqrt(12) * 0.99), False),
        (torch.full((12,), 0.02 / math.sqrt(12) * 1.01), True),
    ],
)
def test_vector_mismatch_rules(received: torch.Tensor | None, mismatch: bool) -> None:
    assert vector_mismatch(torch.zeros(12), received, 12, 0.02) is mismatch


V = encode_vector(torch.ones(12) / math.sqrt(12))


def test_malformed_or_missing_received_vectors_are_mismatches() -> None:
    computed = {1: V, 2: V, 3: V}
    out = validate_vectors(computed, {1: V, 2: "%%%"}, 12, StatTest(), [1, 2, 3])
    assert out.mismatch_nonces == [2, 3] and out.n_total == 3 and out.n_excluded == 0


def test_a_nonce_the_validator_could_not_compute_is_excluded_not_counted() -> None:
    computed = dict.fromkeys(range(1, 20), V)
    received = dict.fromkeys(range(20), V) | {0: "%%%"}
    out = validate_vectors(computed, received, 12, StatTest(), list(range(20)))
    assert (out.n_total, out.n_mismatch, out.excluded_nonces) == (19, 0, [0])
    assert (out.p_value, out.fraud_detected, out.no_verdict) == (1.0, False, None)


def test_a_non_finite_own_vector_is_excluded() -> None:
    inf = encode_vector(torch.tensor([float("inf")] + [0.0] * 11))
    computed = dict.fromkeys(range(10), V) | {4: inf}
    out = validate_vectors(computed, dict.fromkeys(range(10), V), 12, StatTest(), list(range(10)))
    assert (out.n_total, out.excluded_nonces, out.fraud_detected) == (9, [4], False)


@pytest.mark.parametrize(
    ("n_requested", "n_excluded", "judged"),
    [
        (20, 0, True),
        (20, 1, True),
        (20, 2, True),
        (20, 3, False),
        (10, 1, True),
        (10, 2, False),
        (1, 1, False),
        (64, 6, True),
        (64, 7, False),
    ],
)
def test_more_than_a_tenth_unscored_gives_no_verdict(
    n_requested: int, n_excluded: int, judged: bool
) -> None:
    nonces = list(range(n_requested))
    computed = dict.fromkeys(nonces[n_excluded:], V)
    received = dict.fromkeys(nonces, "%%%")
    out = validate_vectors(computed, received, 12, StatTest(), nonces)
    assert out.n_excluded == n_excluded and out.n_total == n_requested - n_excluded
    assert out.n_mismatch == out.n_total
    if judged:
        assert out.no_verdict is None and out.p_value is not None
        assert out.fraud_detected is (out.n_total > 0 and out.p_value < 0.01)
    else:
        assert out.p_value is None and out.fraud_detected is None
        assert out.no_verdict is not None and f"{n_excluded} of {n_requested}" in out.no_verdict


def test_verdict_is_over_the_scored_nonces_only() -> None:
    nonces = list(range(20))
    computed = dict.fromkeys(nonces[1:], V)
    received = dict.fromkeys(nonces, V) | {5: "%%%", 6: "%%%"}
    stat = StatTest(p_mismatch=0.1, fraud_threshold=0.05)
    out = validate_vectors(computed, received, 12, stat, nonces)
    assert out.mismatch_nonces == [5, 6]
    assert out.p_value == pytest.approx(binomtest(2, 19, 0.1, alternative="greater").pvalue)


def test_an_invalid_computed_vector_is_a_bug_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="nonce 1"):
        validate_vectors({1: "%%%"}, {1: "AAAA"}, 12, StatTest(), [1])


def _scores(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_trajectory_agreement_and_small_margins_pass() -> None:
    own = _scores([[0.9, 0.1, 0.0], [0.5, 0.49, 0.0]])
    assert check_trajectory(own, [0, 0], 0.025, 2).mismatch is False
    close = check_trajectory(own, [0, 1], 0.025, 2)
    assert (close.mismatch, close.n_disagree) == (False, 1)
    assert close.max_margin == pytest.approx(0.01, abs=1e-6)


def test_trajectory_large_margin_or_bad_claim_fails() -> None:
    own = _scores([[0.9, 0.1, 0.0], [0.5, 0.4, 0.0]])
    assert check_trajectory(own, [0, 2], 0.025, 2).mismatch is True
    out_of_range = check_trajectory(own, [0, 7], 0.025, 2)
    assert out_of_range.mismatch and out_of_range.max_margin == OUT_OF_RANGE_MARGIN
    assert check_trajectory(own, [0, -1], 3.0, 2).mismatch is False
    assert check_trajectory(own, [0], 0.025, 2).mismatch is True
    assert check_trajectory(own, None, 0.025, 2).mismatch is True
    with pytest.raises(ValueError, match="computed 2 steps"):
        check_trajectory(own, [0, 0, 0], 0.025, 3)


def test_non_finite_steps_are_excluded() -> None:
    own = _scores([[float("nan")] * 3, [0.5, 0.4, 0.0]])
    check = check_trajectory(own, [2, 0], 0.025, 2)
    assert (check.mismatch, check.n_disagree, check.n_nan_steps) == (False, 0, 1)


def test_validate_trajectories_counts_and_tests() -> None:
    own = {n: _scores([[0.9, 0.1], [0.2, 0.8]]) for n in range(4)}
    received = {0: [0, 1], 1: [1, 1], 2: [0, 1, 1], 3: [0, 1]}
    out = validate_trajectories(
        own, received, StatTest(dist_threshold=0.025), list(range(4)), max_tokens=1
    )
    assert out.mismatch_nonces == [1, 2]
    assert out.p_value == pytest.approx(binomial_p_value(2, 4, 0.001), rel=1e-12)
    assert out.fraud_detected


def test_trajectories_without_own_scores_or_all_non_finite_are_excluded() -> None:
    good = _scores([[0.9, 0.1], [0.2, 0.8]])
    half = _scores([[0.9, 0.1], [float("nan"), 0.8]])
    dead = _scores([[float("nan"), 0.1], [float("inf"), 0.8]])
    own = dict.fromkeys(range(20), good) | {3: half, 4: dead}
    del own[5]
    received: dict[int, list[int] | None] = {n: [0, 1] for n in range(20)}
    out = validate_trajectories(own, received, StatTest(), list(range(20)), max_tokens=1)
    assert (out.n_total, out.excluded_nonces, out.n_nan_steps) == (18, [4, 5], 1)
    assert out.fraud_detected is False
    none = validate_trajectories({}, received, StatTest(), list(range(20)), max_tokens=1)
    assert none.fraud_detected is None and none.n_excluded == 20
