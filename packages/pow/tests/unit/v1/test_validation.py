"""Checks on received batches and the binomial fraud test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlnode.pow.v1.validation import (
    MalformedBatch,
    check_batch,
    invalid_mask,
    judge,
    probability_honest,
)

HASH = "block"


@pytest.mark.parametrize(
    ("nonces", "dist", "block_hash", "param", "words"),
    [
        ([1, 2], [1.0], HASH, "dist", "pair up"),
        ([1, -2], [1.0, 1.0], HASH, "nonces", "negative"),
        ([1, 2, 1], [1.0, 1.0, 1.0], HASH, "nonces", "duplicate nonces: [1]"),
        ([1, 2**63], [1.0, 1.0], HASH, "nonces", "int64"),
        ([1, 2], [1.0, float("nan")], HASH, "dist", "non-finite"),
        ([1, 2], [float("inf"), 1.0], HASH, "dist", "non-finite"),
        ([1], [1.0], "other", "block_hash", "not the loaded block hash"),
        ([], [], HASH, "nonces", "no nonces"),
    ],
)
def test_malformed_batches_name_the_problem(
    nonces: list[int], dist: list[float], block_hash: str, param: str, words: str
) -> None:
    with pytest.raises(MalformedBatch, match=words.replace("[", r"\[").replace("]", r"\]")) as err:
        check_batch(nonces, dist, block_hash, HASH)
    assert err.value.param == param


def test_well_formed_batch_passes() -> None:
    check_batch([0, 5, 9], [1.3, 1.31, 1.2], HASH, HASH)


def test_invalid_mask_counts_recomputed_above_and_claims_not_below() -> None:
    r_target = 1.0
    claimed = [0.5, 0.5, 1.0, 0.9, 0.9]
    recomputed = np.array([0.9, 1.1, 0.9, 1.0, np.nan])
    mask = invalid_mask(claimed, recomputed, r_target).tolist()
    assert mask == [False, True, True, False, True]


def test_binomial_verdicts() -> None:
    assert probability_honest(0, 50) == 1.0
    assert math.isclose(probability_honest(5, 50), 6.49814212055268e-11, rel_tol=1e-9)
    assert judge(5, 50, 1e-7).fraud_detected
    assert not judge(1, 50, 1e-7).fraud_detected
    assert not judge(0, 50, 0.01).fraud_detected


def test_stats_rate_and_reset() -> None:
    from mlnode.pow.v1.stats import PowStats

    stats = PowStats()
    stats.computed(64, 3)
    stats.computed(64, 1)
    stats.validated(50, fraud=True)
    assert (stats.nonces_checked, stats.proofs_found, stats.batches_validated) == (128, 4, 1)
    assert stats.rate() > 0
    stats.reset_job()
    assert (stats.nonces_checked, stats.proofs_found, stats.rate()) == (0, 0, 0.0)
    assert (stats.total_nonces, stats.total_proofs, stats.total_frauds) == (178, 4, 1)
