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
        out = validate_vectors(computed, received, 12, stat, n_total=len(received))
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
    out = validate_vectors(computed, received, 12, stat, n_total=64)
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
    out = validate_vectors({}, {}, 12, StatTest(), n_total=0)
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


def test_malformed_received_text_is_a_mismatch_and_missing_is_skipped() -> None:
    v = encode_vector(torch.ones(12) / math.sqrt(12))
    computed = {1: v, 2: v, 3: v}
    out = validate_vectors(computed, {1: v, 2: "%%%"}, 12, StatTest(), n_total=3)
    assert out.mismatch_nonces == [2] and out.n_total == 3


def test_a_nonce_the_validator_could_not_compute_is_no_mismatch_but_counts() -> None:
    v = encode_vector(torch.ones(12) / math.sqrt(12))
    out = validate_vectors({1: v}, {1: v, 2: "%%%"}, 12, StatTest(), n_total=2)
    assert (out.n_total, out.n_mismatch, out.mismatch_nonces) == (2, 0, [])


def test_an_invalid_computed_vector_is_a_bug_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="nonce 1"):
        validate_vectors({1: "%%%"}, {1: "AAAA"}, 12, StatTest(), n_total=1)


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
    out = validate_trajectories(own, received, StatTest(dist_threshold=0.025), 4, max_tokens=1)
    assert out.mismatch_nonces == [1, 2]
    assert out.p_value == pytest.approx(binomial_p_value(2, 4, 0.001), rel=1e-12)
    assert out.fraud_detected
