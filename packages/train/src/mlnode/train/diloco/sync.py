"""Keeping workers bit-identical: weight-hash votes, snapshots served to peers, state pulls.

After each outer step (DiLoCo, Douillard et al., arXiv:2311.08105) every worker publishes its
synced weights and outer momentum, then sends the sha256 of its weights to every peer and waits
for those it can reach. The largest group of equal hashes wins (ties: the group holding the
lowest rank); a worker outside it pulls the winners' snapshot, so one worker that heard from a
different set of peers (a late rejoiner, a peer that dropped part-way) cannot fork the run. A
restarted worker pulls the same snapshot to rejoin at the current round. A worker that took a
peer's state announces its new hash for that round, so peers still voting count it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import torch

from mlnode.common.transport import TensorMeta, TensorTransport
from mlnode.train.diloco.math import Tensors, weights_hash
from mlnode.train.diloco.round import receive_until

log = logging.getLogger(__name__)

PARAM = "param"
MOMENTUM = "momentum"
HASH_KEY = "sha256"


@dataclass(frozen=True)
class Snapshot:
    """Synced state after `round` outer steps."""

    round: int
    params: Tensors
    momentum: Tensors

    def digest(self) -> str:
        """Hash of the weights."""
        return weights_hash(self.params)


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
    """Rounds a peer offers, newest first."""
    rounds = {int(m.name.split("/", 1)[0][1:]) for m in metas if m.name.startswith("r")}
    return sorted(rounds, reverse=True)


def peer_offers(
    transport: TensorTransport,
    peers: list[str],
    task: str,
    wait_s: float,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """Newest round each peer serves; waits up to `wait_s` for peers that serve nothing yet."""
    offers: dict[str, int] = {}
    deadline = time.monotonic() + wait_s
    while True:
        for peer in [p for p in peers if p not in offers]:
            try:
                rounds = offered_rounds(transport.list_tensors(peer, task))
            except Exception as exc:  # not up (yet): ask again or give up
                log.debug("no offer from %s: %s", peer, exc)
                continue
            if rounds:
                offers[peer] = rounds[0]
        done = len(offers) == len(peers) or (stop is not None and stop.is_set())
        if done or time.monotonic() >= deadline:
            return offers
        time.sleep(0.2)


def pull_snapshot(
    transport: TensorTransport, peer: str, task: str, round_index: int | None = None
) -> Snapshot:
    """Fetch a peer's snapshot of `round_index`, or its newest when it has moved past that."""
    metas = transport.list_tensors(peer, task)
    rounds = offered_rounds(metas)
    if not rounds:
        raise LookupError(f"peer {peer} offers no snapshot for task {task}")
    chosen = round_index if round_index in rounds else rounds[0]
    prefix = f"r{chosen}/"
    names = [m.name for m in metas if m.name.startswith(prefix)]
    fetched = transport.fetch(peer, task, names)
    parts: dict[str, Tensors] = {PARAM: {}, MOMENTUM: {}}
    for key, tensor in fetched.items():
        kind, name = key[len(prefix) :].split("/", 1)
        parts[kind][name] = tensor
    return Snapshot(round=chosen, params=parts[PARAM], momentum=parts[MOMENTUM])


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
    payload = {HASH_KEY: torch.frombuffer(bytearray.fromhex(digest), dtype=torch.uint8)}
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
) -> Vote:
    """Send this worker's hash to every peer (id -> rank), collect `wait_for`'s, pick a winner.

    Sending to everyone lets a worker that heard from more peers than they heard from learn
    that it is the odd one out; peers the hash cannot be sent to are not waited for.
    """
    unreachable = announce(transport, peers, task, round_index, digest)
    waiting = set(wait_for) - unreachable
    got = receive_until(transport, task, _hash_tag(round_index), sorted(waiting), timeout_s, stop)
    by_rank = {my_rank: digest} | {
        peers[p]: bytes(w[HASH_KEY].to(torch.uint8).tolist()).hex()
        for p, w in got.items()
        if HASH_KEY in w
    }
    groups: dict[str, list[int]] = {}
    for rank in sorted(by_rank):
        groups.setdefault(by_rank[rank], []).append(rank)
    winner = max(groups, key=lambda h: (len(groups[h]), -min(groups[h])))
    rank_to_peer = {r: p for p, r in peers.items()}
    holders = [rank_to_peer[r] for r in groups[winner] if r != my_rank]
    return Vote(winner=winner, holders=holders, hashes=by_rank)
