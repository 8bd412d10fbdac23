"""Whom a worker trusts: the decisions of a round as pure functions of what the worker saw.

Peers are authenticated but not trusted. With at most `max_faulty` (f) Byzantine workers, a
state that f + 1 workers vouch for was computed by at least one honest worker, so a worker adopts
a peer's state only when that many vouch for its exact hash (a vote of this round, or the hashes
peers serve beside their snapshots), never because a peer claims a later round. The pulled state
must then hash to the vouched value (`validate.check_state`). f = floor((n - 1) / 3) by default,
the most a vote among n workers tolerates (Lamport, Shostak and Pease, "The Byzantine Generals
Problem", TOPLAS 1982); f = 0 trusts every peer, as a private cluster may.

The trainer carries these decisions out; nothing here touches tensors or the transport.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


def default_max_faulty(world_size: int) -> int:
    """The most Byzantine workers a hash vote among `world_size` workers tolerates."""
    return max(0, (world_size - 1) // 3)


def _groups(hashes: Mapping[int, str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for rank in sorted(hashes):
        groups.setdefault(hashes[rank], []).append(rank)
    return groups


@dataclass(frozen=True)
class VoteDecision:
    """Outcome of this worker's hash vote."""

    winner: str
    #: Ranks other than this worker's that hold the winner, lowest first: whom to pull from.
    holders: list[int]
    #: True when this worker holds another state and must take the winner's.
    pull: bool


def decide_vote(hashes: Mapping[int, str], my_rank: int, max_faulty: int) -> VoteDecision:
    """Pick the state of this round from every worker's hash (rank -> hash, this one included).

    Only this worker's own hash and hashes at least `max_faulty + 1` workers hold can win; among
    those the largest group wins, ties going to the group with the lowest rank. A hash one
    attacker sends alone therefore never wins unless f = 0.
    """
    groups = _groups(hashes)
    mine = hashes[my_rank]
    eligible = {h: r for h, r in groups.items() if h == mine or len(r) > max_faulty}
    winner = max(eligible, key=lambda h: (len(eligible[h]), -min(eligible[h])))
    holders = [r for r in groups[winner] if r != my_rank]
    return VoteDecision(winner=winner, holders=holders, pull=winner != mine)


def vote_settled(hashes: Mapping[int, str], my_rank: int, missing: int, max_faulty: int) -> bool:
    """Whether the hashes still missing can no longer change `decide_vote`'s winner.

    So a peer that never sends its hash cannot make every round wait out the vote timeout: the
    wait ends once the largest group can win and leads the next by more than the missing votes.
    """
    if missing <= 0:
        return True
    groups = sorted((len(r), h) for h, r in _groups(hashes).items())
    size, leader = groups[-1]
    second = groups[-2][0] if len(groups) > 1 else 0
    can_win = size > max_faulty or leader == hashes[my_rank]
    return can_win and size - second > missing


@dataclass(frozen=True)
class Adoption:
    """A peer state to take: its round, its state hash, and who serves it (lowest rank first)."""

    round: int
    digest: str
    holders: list[str]


def choose_state(
    own: tuple[int, str],
    offers: Mapping[str, Mapping[int, str]],
    ranks: Mapping[str, int],
    my_rank: int,
    max_faulty: int,
    level: bool,
) -> Adoption | None:
    """Which offered state to take, if any, when joining or catching up.

    `own` is this worker's (round, state hash); `offers` maps each peer to the rounds it serves
    and the state hash it states for each. A state qualifies when at least `max_faulty + 1` peers
    serve it and it is ahead of `own`, or, with `level`, at `own`'s round with more vouchers than
    `own` (ties: the lower rank). The newest qualifying state wins, then the most vouched, then
    the one of the lowest rank.
    """
    vouchers: dict[tuple[int, str], list[str]] = {}
    for peer in sorted(offers, key=lambda p: ranks[p]):
        for round_index, digest in offers[peer].items():
            vouchers.setdefault((round_index, digest), []).append(peer)
    own_group = [my_rank] + [ranks[p] for p in vouchers.get(own, [])]
    mine = (len(own_group), -min(own_group))
    found: list[tuple[int, int, int, Adoption]] = []
    for (round_index, digest), peers in vouchers.items():
        if len(peers) <= max_faulty or (round_index, digest) == own:
            continue
        strength = (len(peers), -ranks[peers[0]])
        ahead = round_index > own[0]
        if ahead or (level and round_index == own[0] and strength > mine):
            found.append((round_index, *strength, Adoption(round_index, digest, peers)))
    if not found:
        return None
    return max(found, key=lambda item: item[:3])[3]


def select_scored(scores: Mapping[int, float], keep: int) -> list[int]:
    """Ranks of the `keep` best (lowest) finite loss changes, in rank order (ties: lower rank).

    Every honest worker scores the same candidates on the same batch, so they keep the same set;
    a candidate whose score is not finite is never kept.
    """
    finite = [(s, r) for r, s in scores.items() if math.isfinite(s)]
    return sorted(r for _, r in sorted(finite)[: max(keep, 0)])


def gate_keep(configured: int | None, candidates: int, max_faulty: int) -> int:
    """How many candidates the loss gate keeps: as configured, else all but `max_faulty`."""
    keep = configured if configured is not None else candidates - max_faulty
    return max(1, min(keep, candidates))
