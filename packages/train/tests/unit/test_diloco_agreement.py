"""The pure rules of whom a worker trusts, case by case."""

from __future__ import annotations

import math

import pytest

from mlnode.train.diloco.agreement import (
    choose_state,
    decide_vote,
    default_max_faulty,
    gate_keep,
    select_scored,
    vote_settled,
)

A, B, C, X = "aa", "bb", "cc", "xx"  # X: what an attacker holds alone


@pytest.mark.parametrize(
    ("world", "f"), [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (6, 1), (7, 2), (10, 3)]
)
def test_default_max_faulty_is_the_most_a_vote_tolerates(world: int, f: int) -> None:
    assert default_max_faulty(world) == f


VOTES = [
    # hashes by rank, my rank, f -> winner, holders, pull
    ({0: A, 1: A, 2: B}, 2, 0, A, [0, 1], True),  # the majority wins
    ({0: A, 1: B}, 1, 0, A, [0], True),  # f = 0: a tie goes to the lowest rank
    ({0: X, 1: A}, 1, 1, A, [], False),  # f = 1: one voice alone never beats my own
    ({0: X, 1: A, 2: A, 3: A, 4: A}, 2, 1, A, [1, 3, 4], False),
    ({0: X, 1: A, 2: B, 3: B, 4: A}, 1, 1, A, [4], False),  # 2-2 tie: lowest rank's group
    ({0: X, 1: A, 2: B, 3: B, 4: A}, 2, 1, A, [1, 4], True),
    ({0: X, 1: A, 2: B, 3: C}, 3, 1, C, [], False),  # no group of f + 1: keep my own
    ({0: X, 1: X, 2: A}, 2, 1, X, [0, 1], True),  # f + 1 voices: one of them is honest
    ({0: A, 1: A, 2: X}, 2, 1, A, [0, 1], True),  # the attacker itself is told to pull
]


@pytest.mark.parametrize(("hashes", "me", "f", "winner", "holders", "pull"), VOTES)
def test_decide_vote(
    hashes: dict[int, str], me: int, f: int, winner: str, holders: list[int], pull: bool
) -> None:
    decision = decide_vote(hashes, me, f)

    assert (decision.winner, decision.holders, decision.pull) == (winner, holders, pull)


RANKS = {"p0": 0, "p1": 1, "p3": 3, "p4": 4}

STATES = [
    # own (round, hash), offers, f, level -> (round, hash, holders) or None
    ((3, A), {"p0": {1000: X}, "p1": {3: A}, "p3": {3: A}}, 1, True, None),  # a claim alone
    ((3, A), {"p0": {1000: X}}, 0, False, (1000, X, ["p0"])),  # f = 0 trusts any peer
    ((3, A), {"p0": {1000: X}, "p1": {5: B, 4: C}, "p3": {5: B}}, 1, False, (5, B, ["p1", "p3"])),
    ((3, A), {"p1": {5: B, 4: C}, "p3": {4: C, 3: A}}, 1, False, (4, C, ["p1", "p3"])),
    ((3, A), {"p1": {3: B}, "p3": {3: B}}, 1, False, None),  # level: only with `level`
    ((3, A), {"p1": {3: B}, "p3": {3: B}}, 1, True, (3, B, ["p1", "p3"])),
    ((3, A), {"p1": {3: B}, "p3": {3: A}}, 0, True, None),  # level 1 vs my 2: keep mine
    ((3, A), {"p0": {3: B}}, 0, True, (3, B, ["p0"])),  # level tie: the lower rank's
    ((3, A), {"p4": {3: B}}, 0, True, None),
    ((3, A), {"p1": {2: B}, "p3": {2: B}}, 1, True, None),  # never backwards
    ((3, A), {"p1": {4: B}, "p3": {4: C}}, 1, False, None),  # ahead but not vouched alike
    ((0, A), {}, 1, True, None),
]


@pytest.mark.parametrize(("own", "offers", "f", "level", "expected"), STATES)
def test_choose_state(
    own: tuple[int, str],
    offers: dict[str, dict[int, str]],
    f: int,
    level: bool,
    expected: tuple[int, str, list[str]] | None,
) -> None:
    adoption = choose_state(own, offers, RANKS, 2, f, level)

    got = None if adoption is None else (adoption.round, adoption.digest, adoption.holders)
    assert got == expected


@pytest.mark.parametrize(
    ("scores", "keep", "kept"),
    [
        ({0: -0.2, 1: -0.1, 2: 0.5, 3: -0.3}, 3, [0, 1, 3]),
        ({0: -0.1, 1: -0.1, 2: -0.1}, 2, [0, 1]),  # ties: lower rank
        ({0: math.nan, 1: math.inf, 2: 0.1}, 2, [2]),  # never a non-finite score
        ({0: -1.0}, 0, []),
    ],
)
def test_select_scored(scores: dict[int, float], keep: int, kept: list[int]) -> None:
    assert select_scored(scores, keep) == kept


@pytest.mark.parametrize(
    ("configured", "candidates", "f", "keep"),
    [(None, 5, 1, 4), (None, 3, 0, 3), (2, 5, 1, 2), (9, 5, 1, 5), (None, 1, 1, 1)],
)
def test_gate_keep(configured: int | None, candidates: int, f: int, keep: int) -> None:
    assert gate_keep(configured, candidates, f) == keep


SETTLED = [
    # hashes, my rank, missing, f -> settled
    ({0: A, 1: A, 2: A, 3: A}, 0, 1, 1, True),  # 4 to 0: one more cannot change it
    ({0: A, 1: A, 2: B}, 0, 1, 0, False),  # 2 to 1: one more could tie
    ({0: A, 1: A, 2: A, 3: B}, 3, 1, 1, True),
    ({0: A, 1: B}, 0, 1, 0, False),
    ({0: A}, 0, 0, 1, True),  # nobody missing
    ({0: A, 1: B, 2: B}, 0, 1, 2, False),  # B cannot win yet (f = 2) but one more would let it
    ({0: A}, 0, 1, 1, False),
]


@pytest.mark.parametrize(("hashes", "me", "missing", "f", "settled"), SETTLED)
def test_vote_settled(hashes: dict[int, str], me: int, missing: int, f: int, settled: bool) -> None:
    assert vote_settled(hashes, me, missing, f) is settled
