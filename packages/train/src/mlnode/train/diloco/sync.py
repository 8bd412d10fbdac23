"""Keeping workers bit-identical: state-hash votes, snapshots served to peers, state pulls.

After each outer step (DiLoCo, Douillard et al., arXiv:2311.08105) every worker publishes its
synced weights and outer momentum with their state hash, then sends that hash to every peer and
waits for those it can reach. `agreement.decide_vote` picks the winner (only a hash enough
workers hold can beat this worker's own); a worker outside it pulls the winners' snapshot and
keeps it only if it hashes to the winner and fits the model (`validate.check_state`), so one
worker that heard from a different set of peers (a late rejoiner, a peer that dropped part-way)
cannot fork the run, and a lying peer cannot hand over its own state. A restarted worker pulls
the same way to rejoin at the current round. A worker that took a peer's state announces its
new hash for that round, so peers still voting count it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import torch

from mlnode.common.transport import TensorMeta, TensorTransport
from mlnode.train.diloco.agreement import decide_vote, vote_settled
from mlnode.train.diloco.math import Tensors, weights_hash
from mlnode.train.diloco.validate import DIGEST_BYTES, Layout, check_state, digest_of

log = logging.getLogger(__name__)

PARAM = "param"
MOMENTUM = "momentum"
META = "meta"
HASH_KEY = "sha256"
#: Rounds of a peer's offer that are looked at (a provider keeps two).
OFFERED_ROUNDS = 2
#: How often a vote looks at the hashes it has so far.
POLL_S = 0.5


class InvalidState(ValueError):
    """A peer's snapshot does not fit the model or does not hash to the vouched value."""


@dataclass(frozen=True)
class Snapshot:
    """Synced state after `round` outer steps."""

    round: int
    params: Tensors
    momentum: Tensors

    def digest(self) -> str:
        """Hash of the weights."""
        return weights_hash(self.params)

    def state_digest(self) -> str:
        """Hash of weights and outer momentum: what workers vote on and pulls are checked by."""
        return state_hash(self.params, self.momentum)


def state_hash(params: Tensors, momentum: Tensors) -> str:
    """sha256 over the weights and the outer momentum (names kept apart by a prefix)."""
    both = {f"{PARAM}/{n}": t for n, t in params.items()}
    both |= {f"{MOMENTUM}/{n}": t for n, t in momentum.items()}
    return weights_hash(both)


def _digest_tensor(digest: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(digest), dtype=torch.uint8)


def _name(round_index: int, kind: str, name: str) -> str:
    return f"r{round_index}/{kind}/{name}"


class SnapshotProvider:
    """Serves the last few snapshots to pulling peers (a `TensorProvider`)."""

    def __init__(self, keep: int = 2) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._tensors: dict[str, torch.Tensor] = {}
        self._rounds: list[int] = []

    def publish(self, snapshot: Snapshot) -> None:
        """Offer a snapshot; drops the oldest beyond `keep`."""
        fresh = {_name(snapshot.round, PARAM, n): t for n, t in snapshot.params.items()}
        fresh |= {_name(snapshot.round, MOMENTUM, n): t for n, t in snapshot.momentum.items()}
        fresh[_name(snapshot.round, META, HASH_KEY)] = _digest_tensor(snapshot.state_digest())
        with self._lock:
            self._rounds = [r for r in self._rounds if r != snapshot.round] + [snapshot.round]
            expired = self._rounds[: -self._keep]
            self._rounds = self._rounds[-self._keep :]
            gone = tuple(f"r{r}/" for r in expired)
            self._tensors = {k: v for k, v in self._tensors.items() if not k.startswith(gone)}
            self._tensors.update(fresh)

    def describe(self) -> list[TensorMeta]:
        """Every tensor on offer."""
        with self._lock:
            items = list(self._tensors.items())
        return [TensorMeta(name=k, dtype=t.dtype, shape=tuple(t.shape)) for k, t in items]

    def get(self, name: str) -> torch.Tensor:
        """One tensor; KeyError when not on offer."""
        with self._lock:
            return self._tensors[name]


def offered_rounds(metas: list[TensorMeta]) -> list[int]:
    """Rounds a peer offers, newest first (names that are not `r<round>/...` are ignored)."""
    rounds = set()
    for meta in metas:
        head = meta.name.split("/", 1)[0]
        if head.startswith("r") and head[1:].isdigit():
            rounds.add(int(head[1:]))
    return sorted(rounds, reverse=True)


def offered_states(transport: TensorTransport, peer: str, task: str) -> dict[int, str]:
    """The newest rounds a peer serves, each with the state hash the peer states for it."""
    rounds = offered_rounds(transport.list_tensors(peer, task))[:OFFERED_ROUNDS]
    names = [_name(r, META, HASH_KEY) for r in rounds]
    expected = {n: TensorMeta(n, torch.uint8, (DIGEST_BYTES,)) for n in names}
    fetched = transport.fetch(peer, task, names, expected=expected) if names else {}
    states = {}
    for round_index, name in zip(rounds, names, strict=True):
        digest = digest_of(fetched.get(name))
        if digest is not None:
            states[round_index] = digest
    return states


def peer_states(
    transport: TensorTransport,
    peers: list[str],
    task: str,
    wait_s: float,
    stop: threading.Event | None = None,
) -> dict[str, dict[int, str]]:
    """What each peer serves (round -> stated hash); waits up to `wait_s` for silent peers."""
    offers: dict[str, dict[int, str]] = {}
    deadline = time.monotonic() + wait_s
    while True:
        for peer in [p for p in peers if p not in offers]:
            try:
                states = offered_states(transport, peer, task)
            except Exception as exc:  # not up (yet): ask again or give up
                log.debug("no offer from %s: %s", peer, exc)
                continue
            if states:
                offers[peer] = states
        done = len(offers) == len(peers) or (stop is not None and stop.is_set())
        if done or time.monotonic() >= deadline:
            return offers
        time.sleep(0.2)


def pull_snapshot(
    transport: TensorTransport,
    peer: str,
    task: str,
    round_index: int | None = None,
    *,
    layout: Layout | None = None,
    digest: str | None = None,
) -> Snapshot:
    """Fetch a peer's snapshot of `round_index` (its newest when it does not serve that round).

    With `layout`, exactly the model's tensors are fetched and must fit it; with `digest`, the
    snapshot's state hash must equal it. Else `InvalidState`, and nothing of it is used.
    """
    metas = transport.list_tensors(peer, task)
    rounds = offered_rounds(metas)
    if not rounds:
        raise LookupError(f"peer {peer} offers no snapshot for task {task}")
    chosen = round_index if round_index in rounds else rounds[0]
    if digest is not None and chosen != round_index:
        raise InvalidState(f"peer {peer} does not serve round {round_index}")
    expected: dict[str, TensorMeta] | None = None
    if layout is not None:
        # Only the model's tensors, refused before allocation unless shaped as the model's.
        expected = {
            _name(chosen, kind, n): TensorMeta(_name(chosen, kind, n), dtype, shape)
            for kind in (PARAM, MOMENTUM)
            for n, (shape, dtype) in sorted(layout.items())
        }
        names = list(expected)
    else:
        names = [m.name for m in metas if m.name.startswith(f"r{chosen}/{PARAM}/")]
        names += [m.name for m in metas if m.name.startswith(f"r{chosen}/{MOMENTUM}/")]
    fetched = transport.fetch(peer, task, names, expected=expected)
    parts: dict[str, Tensors] = {PARAM: {}, MOMENTUM: {}}
    prefix = f"r{chosen}/"
    for key in names:
        kind, name = key[len(prefix) :].split("/", 1)
        parts[kind][name] = fetched[key]
    snapshot = Snapshot(round=chosen, params=parts[PARAM], momentum=parts[MOMENTUM])
    reason = check_state(snapshot.params, snapshot.momentum, layout) if layout else None
    if reason is None and digest is not None and snapshot.state_digest() != digest:
        reason = "its state hash is not the vouched one"
    if reason is not None:
        raise InvalidState(f"snapshot of round {chosen} from {peer} refused: {reason}")
    return snapshot


@dataclass(frozen=True)
class Vote:
    """Outcome of a hash vote."""

    winner: str
    #: Peers whose weights hash to `winner`, lowest rank first (this worker excluded).
    holders: list[str]
    #: rank -> hash, for every worker heard from (this one included).
    hashes: dict[int, str]

    def agrees(self, digest: str) -> bool:
        """Whether `digest` is the winning hash."""
        return digest == self.winner


def _hash_tag(round_index: int) -> str:
    return f"outer-{round_index}/hash"


def announce(
    transport: TensorTransport, peers: Iterable[str], task: str, round_index: int, digest: str
) -> set[str]:
    """Send this worker's weight hash of round `round_index` to `peers`; returns the unreachable.

    A later hash for the same round replaces one a peer has not counted yet, so a worker that
    took the winners' state after voting, or pulled a round it never voted on, still counts
    for that state in the votes of peers that wait for it.
    """
    payload = {HASH_KEY: _digest_tensor(digest)}
    unreachable: set[str] = set()
    for peer in peers:
        try:
            transport.send(peer, payload, task, _hash_tag(round_index))
        except Exception as exc:  # a peer that cannot hear us just has no vote
            log.warning("hash to %s not sent: %s", peer, exc)
            unreachable.add(peer)
    return unreachable


def vote(
    transport: TensorTransport,
    peers: Mapping[str, int],
    wait_for: Collection[str],
    *,
    task: str,
    round_index: int,
    my_rank: int,
    digest: str,
    timeout_s: float,
    stop: threading.Event | None = None,
    max_faulty: int = 0,
) -> Vote:
    """Send this worker's hash to every peer (id -> rank), collect `wait_for`'s, pick a winner.

    Sending to everyone lets a worker that heard from more peers than they heard from learn
    that it is the odd one out; peers the hash cannot be sent to are not waited for, nor the
    rest once they could not change the outcome (`agreement.vote_settled`). A message that is
    not one 32-byte hash is no vote. The winner is `agreement.decide_vote`'s.
    """
    unreachable = announce(transport, peers, task, round_index, digest)
    pending = sorted(set(wait_for) - unreachable)
    by_rank = {my_rank: digest}
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while pending:
        left = max(deadline - time.monotonic(), 0.0)
        got = transport.receive(task, _hash_tag(round_index), pending, min(left, POLL_S))
        for peer, tensors in got.items():
            theirs = digest_of(tensors.get(HASH_KEY)) if len(tensors) == 1 else None
            if theirs is not None:
                by_rank[peers[peer]] = theirs
        pending = [p for p in pending if p not in got]
        settled = vote_settled(by_rank, my_rank, len(pending), max_faulty)
        if settled or left <= 0 or (stop is not None and stop.is_set()):
            break
    decision = decide_vote(by_rank, my_rank, max_faulty)
    rank_to_peer = {r: p for p, r in peers.items()}
    holders = [rank_to_peer[r] for r in decision.holders]
    return Vote(winner=decision.winner, holders=holders, hashes=by_rank)
