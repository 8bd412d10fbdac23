"""One DiLoCo outer round over a `TensorTransport`: exchange pseudo-gradients, average survivors.

DiLoCo: Douillard et al., arXiv:2311.08105. Fault tolerance follows Flower's strategy shape
(Beutel et al., arXiv:2007.14390): the aggregation gets the `results` that arrived *and* the
`failures`, so the workers that answered proceed without the ones that did not.

Every worker sends its encoded pseudo-gradient to every other worker (a direct all-to-all
exchange, so a dead worker costs nobody a relay), one chunk of whole tensors at a time, and
aggregates each chunk before the next is sent: memory stays bounded by about
`world_size x chunk_bytes` beyond the model (an `aggregate` given by the caller, such as the loss
gate's, gets every contribution whole instead). Each peer's chunk is checked against this
worker's model before use (`validate.check_chunk`); a peer whose chunk is refused is left out of
the round like one that missed the deadline. Every contribution counts the same: the sample count
each worker declares must be the agreed one. Contributions are reduced in rank order
(`aggregation.combine`), so workers that heard from the same set get bit-identical results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import prod

import torch

from mlnode.common.transport import TensorTransport
from mlnode.train.diloco.aggregation import Aggregation, combine, effective, sparse_mean
from mlnode.train.diloco.math import (
    Compression,
    Tensors,
    compress,
    decompress,
    wire_bytes,
)
from mlnode.train.diloco.sparse import SparseSpec, decode
from mlnode.train.diloco.validate import check_chunk, layout_of

log = logging.getLogger(__name__)

WEIGHT_KEY = "__weight__"

#: Aggregates whole contributions (rank -> decoded pseudo-gradient) given `results` (rank -> peer).
Aggregate = Callable[[Mapping[int, Tensors], Mapping[int, str]], Tensors]


@dataclass
class RoundResult:
    """Outcome of one round: the average and who took part."""

    average: Tensors
    #: rank -> peer id (this worker as "self") whose whole pseudo-gradient went into the average.
    results: dict[int, str]
    #: peer id -> why it was left out of this round.
    failures: dict[str, str]
    bytes_sent: int = 0
    bytes_received: int = 0
    #: True when a peer dropped part-way, so some chunks were averaged over more workers.
    partial: bool = False
    #: rank -> whole decoded pseudo-gradient, with an `aggregate` (this worker's included).
    contributions: dict[int, Tensors] = field(default_factory=dict)


@dataclass
class ErrorFeedback:
    """Residuals of int8 or sparse compression, carried from round to round (per tensor name)."""

    residuals: Tensors = field(default_factory=dict)

    def encode(
        self, name: str, tensor: torch.Tensor, mode: Compression, spec: SparseSpec | None = None
    ) -> Tensors:
        """Encode one tensor, updating its residual."""
        parts, residual = compress(tensor, mode, self.residuals.get(name), spec)
        if residual is not None:
            self.residuals[name] = residual
        return parts


def plan_chunks(tensors: Mapping[str, torch.Tensor], chunk_bytes: int) -> list[list[str]]:
    """Group tensor names, in name order, into chunks of at most `chunk_bytes` (or one tensor)."""
    chunks: list[list[str]] = []
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if not chunks or size + nbytes > chunk_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += nbytes
    return chunks


def _encode_chunk(
    grads: Mapping[str, torch.Tensor], names: list[str], config: RoundConfig, fb: ErrorFeedback
) -> Tensors:
    wire: Tensors = {}
    for name in names:
        for part, tensor in fb.encode(name, grads[name], config.compression, config.sparse).items():
            wire[f"{name}/{part}"] = tensor
    return wire


def _parts(wire: Mapping[str, torch.Tensor], name: str) -> Tensors:
    prefix = f"{name}/"
    return {key[len(prefix) :]: t for key, t in wire.items() if key.startswith(prefix)}


def _decode(
    wire: Mapping[str, torch.Tensor], name: str, shape: tuple[int, ...], config: RoundConfig
) -> torch.Tensor:
    return decompress(_parts(wire, name), config.compression, shape, config.sparse)


class _Exchange:
    """Per-round bookkeeping: who is still in, bytes moved, why peers left."""

    def __init__(
        self,
        transport: TensorTransport,
        peers: Mapping[str, int],
        task: str,
        stop: threading.Event | None,
    ) -> None:
        self.transport = transport
        self.alive = dict(peers)
        self.task = task
        self.stop = stop
        self.failures: dict[str, str] = {}
        self.bytes_sent = 0
        self.bytes_received = 0

    def drop(self, peer: str, reason: str) -> None:
        self.alive.pop(peer, None)
        self.failures.setdefault(peer, reason)
        log.warning("peer %s left out of the round: %s", peer, reason)

    def broadcast(self, wire: Tensors, tag: str) -> None:
        for peer in sorted(self.alive, key=self.alive.__getitem__):
            try:
                self.transport.send(peer, wire, self.task, tag)
                self.bytes_sent += wire_bytes(wire)
            except Exception as exc:  # any send failure only removes that peer
                self.drop(peer, f"send failed: {type(exc).__name__}: {exc}")

    def gather(self, tag: str, timeout: float) -> dict[str, Tensors]:
        got = receive_until(self.transport, self.task, tag, list(self.alive), timeout, self.stop)
        for peer in list(self.alive):
            if peer not in got:
                self.drop(peer, f"missed the deadline ({tag})")
        for wire in got.values():
            self.bytes_received += wire_bytes(wire)
        return {peer: got[peer] for peer in self.alive}


@dataclass(frozen=True)
class RoundConfig:
    """What stays the same from round to round."""

    task: str
    my_rank: int
    compression: Compression
    #: How long the first chunk waits for peers (they may still be in their inner steps).
    timeout_s: float
    #: How long each later chunk waits.
    chunk_timeout_s: float
    chunk_bytes: int = 16 * 2**20
    aggregation: Aggregation = Aggregation.MEAN
    #: f: how many contributions the robust rules must tolerate.
    max_faulty: int = 0
    clip_factor: float = 1.0
    sparse: SparseSpec = field(default_factory=SparseSpec)


def receive_until(
    transport: TensorTransport,
    task: str,
    tag: str,
    peers: list[str],
    timeout: float,
    stop: threading.Event | None = None,
    poll_s: float = 0.5,
) -> dict[str, Tensors]:
    """`transport.receive` in short slices, so a stop request ends the wait within `poll_s`."""
    deadline = time.monotonic() + max(timeout, 0.0)
    got: dict[str, Tensors] = {}
    pending = list(peers)
    while pending:
        left = max(deadline - time.monotonic(), 0.0)
        got |= transport.receive(task, tag, pending, min(left, poll_s))
        pending = [p for p in pending if p not in got]
        if left <= 0 or (stop is not None and stop.is_set()):
            break
    return got


def run_round(
    transport: TensorTransport,
    peers: Mapping[str, int],
    config: RoundConfig,
    round_index: int,
    grads: Mapping[str, torch.Tensor],
    weight: float,
    feedback: ErrorFeedback,
    stop: threading.Event | None = None,
    base: str = "",
    aggregate: Aggregate | None = None,
) -> RoundResult:
    """Exchange `grads` with `peers` (peer id -> rank) and aggregate what arrived and is valid.

    `weight` is the sample count every worker of the task declares (the same for all, from the
    shared request): a peer declaring another is refused, so no sender picks its own weight.
    `base` (the hash of the state the round starts from) goes into every tag, so only workers
    that start from the same state aggregate together; a message left in an inbox by an earlier
    run of the task is taken only if that run started the round from the same state, and any
    difference that leaves is settled by the hash vote after the round.

    A peer that fails to send, misses a deadline or sends what `check_chunk` refuses is left out
    from then on and listed in `failures`; the result is over this worker and the peers in
    `results`. With `aggregate`, `contributions` holds every whole pseudo-gradient and `average` is
    what `aggregate` makes of them (left empty when `stop` cut the round short).
    """
    exchange = _Exchange(transport, peers, config.task, stop)
    retain = aggregate is not None
    layout = layout_of(grads)
    agreed = {WEIGHT_KEY: torch.tensor(weight, dtype=torch.float32)}
    average: Tensors = {}
    kept: dict[int, Tensors] = {}
    counted: set[str] = set()
    for index, names in enumerate(plan_chunks(grads, config.chunk_bytes)):
        wire = _encode_chunk(grads, names, config, feedback)
        extra = agreed if index == 0 else None
        tag = f"outer-{round_index}-{base[:16]}/chunk-{index}"
        exchange.broadcast(wire | (extra or {}), tag)
        received = exchange.gather(tag, config.timeout_s if index == 0 else config.chunk_timeout_s)
        for peer, got in received.items():
            reason = check_chunk(got, names, layout, config.compression, extra, config.sparse)
            if reason is not None:
                exchange.drop(peer, f"invalid pseudo-gradient: {reason}")
            elif index == 0:
                counted.add(peer)
        ranked = [(config.my_rank, wire)] + [
            (peers[p], received[p]) for p in exchange.alive if p in counted and p in received
        ]
        ranked.sort(key=lambda item: item[0])
        rule = effective(config.aggregation, len(ranked), config.max_faulty)
        scatter = config.compression is Compression.SPARSELOCO and rule is Aggregation.MEAN
        for name in names:
            shape = layout[name][0]
            if scatter and not retain:
                # Summed peer by peer: no peer's tensor is made dense.
                contributions = (
                    decode(_parts(w, name), prod(shape), config.sparse) for _, w in ranked
                )
                average[name] = sparse_mean(contributions, len(ranked), shape)
                continue
            decoded = [(rank, _decode(w, name, shape, config)) for rank, w in ranked]
            if retain:
                for rank, tensor in decoded:
                    kept.setdefault(rank, {})[name] = tensor
            else:
                average[name] = combine(
                    [t for _, t in decoded],
                    config.aggregation,
                    config.max_faulty,
                    config.clip_factor,
                )
    whole = {config.my_rank} | {peers[p] for p in exchange.alive if p in counted}
    results = {config.my_rank: "self"} | {peers[p]: p for p in exchange.alive if p in counted}
    survivors = {r: t for r, t in kept.items() if r in whole}
    if aggregate is not None and not (stop is not None and stop.is_set()):
        average = aggregate(survivors, results)
    return RoundResult(
        average=average,
        results=results,
        failures=exchange.failures,
        bytes_sent=exchange.bytes_sent,
        bytes_received=exchange.bytes_received,
        partial=any(p in counted for p in exchange.failures),
        contributions=survivors,
    )
