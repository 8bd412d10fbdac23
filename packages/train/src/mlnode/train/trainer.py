"""One DiLoCo worker: inner AdamW steps, outer rounds over the transport, votes, checkpoints.

DiLoCo: Douillard et al., arXiv:2311.08105. The worker keeps the last synced weights and the outer
momentum; after H inner steps it exchanges its pseudo-gradient (`diloco.round`), applies the outer
Nesterov step, publishes the result for pulling peers and checks by hash vote that it holds the
same bits as the others (`diloco.sync`). Peers are not trusted: what they send is checked before
use, pseudo-gradients go through the loss gate (`gate`) and a robust aggregation, and whose state
to take is decided by `diloco.agreement`. With several local devices this worker is local rank 0
and drives the other local ranks (`ranks.LocalRanks`) step by step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch

from mlnode.common.transport import TensorTransport
from mlnode.train.checkpoint import Checkpoint, load_latest, save_checkpoint
from mlnode.train.data import TokenBatches, worker_data
from mlnode.train.diloco.aggregation import combine_all
from mlnode.train.diloco.agreement import choose_state, default_max_faulty
from mlnode.train.diloco.math import Tensors, nesterov_outer_step, pseudo_gradient
from mlnode.train.diloco.round import ErrorFeedback, RoundConfig, RoundResult, run_round
from mlnode.train.diloco.sparse import SparseSpec
from mlnode.train.diloco.sync import (
    Snapshot,
    SnapshotProvider,
    announce,
    peer_states,
    pull_snapshot,
    vote,
)
from mlnode.train.diloco.validate import layout_of
from mlnode.train.gate import LossGate
from mlnode.train.inner import InnerLoop
from mlnode.train.local import local_optim
from mlnode.train.model import build_model
from mlnode.train.progress import TrainProgress
from mlnode.train.ranks import LocalRanks
from mlnode.train.schemas import RobustStatus, TrainRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerEnv:
    """What the node gives a trainer."""

    transport: TensorTransport
    device: torch.device
    checkpoint_dir: Path
    vote_timeout_s: float = 30.0
    join_timeout_s: float = 60.0
    #: One device per local rank (`device` first); more than one starts follower processes.
    local_devices: tuple[torch.device, ...] = ()
    local_timeout_s: float = 600.0
    torch_threads: int | None = None


@dataclass
class TrainerParts:
    """What a trainer is made of that takes time to build: the model's inner loop and the data."""

    inner: InnerLoop
    model_config: dict[str, Any]
    batches: TokenBatches
    eval_set: torch.Tensor
    #: The follower processes' handle when the worker spans several local devices.
    local: LocalRanks | None = None


def build_parts(request: TrainRequest, env: TrainerEnv) -> TrainerParts:
    """Build the model (from the request's seed), this worker's data and its inner loop."""
    model = build_model(request.model, request.seed)
    batches, eval_set = worker_data(request, model)
    local: LocalRanks | None = None
    if len(env.local_devices) > 1:
        local = LocalRanks(
            env.local_devices, env.checkpoint_dir, env.local_timeout_s, env.torch_threads
        )
    local_world = local.world if local is not None else 1
    inner = InnerLoop(model, local_optim(request.optim, local_world), env.device)
    return TrainerParts(inner, model.config.to_dict(), batches, eval_set, local)


class DilocoTrainer:
    """Runs one worker of a DiLoCo task until its total steps are done or it is stopped."""

    @classmethod
    def build(cls, request: TrainRequest, env: TrainerEnv, progress: TrainProgress) -> Self:
        """A trainer for `request`, its model and data built (seconds to minutes: off the loop)."""
        return cls(request, env, progress, build_parts(request, env))

    def __init__(
        self, request: TrainRequest, env: TrainerEnv, progress: TrainProgress, parts: TrainerParts
    ) -> None:
        self.req = request
        self.env = env
        self.progress = progress
        self.peers = request.peer_ranks()
        self.model_config = parts.model_config
        self.batches, self.eval_set = parts.batches, parts.eval_set
        self.local = parts.local
        self.inner = parts.inner
        self.h = request.diloco.inner_steps
        self.total_rounds = math.ceil(request.optim.total_steps / self.h)
        self.round = 0
        self.synced: Tensors = {n: t.clone() for n, t in self.inner.weights().items()}
        self.momentum: Tensors = {n: torch.zeros_like(t) for n, t in self.synced.items()}
        self.layout = layout_of(self.synced)
        self.feedback = ErrorFeedback()
        self.base_digest = ""
        self.weights_digest = ""
        self.provider = SnapshotProvider()
        d = request.diloco
        robust = d.robust
        self.max_faulty = (
            robust.max_faulty
            if robust.max_faulty is not None
            else default_max_faulty(request.world_size)
        )
        self.round_config = RoundConfig(
            task=request.task_id,
            my_rank=request.rank,
            compression=d.compression,
            timeout_s=d.round_timeout_s,
            chunk_timeout_s=d.chunk_timeout_s,
            chunk_bytes=max(1, int(d.chunk_mb * 2**20)),
            aggregation=robust.aggregation,
            max_faulty=self.max_faulty,
            clip_factor=robust.clip_factor,
            sparse=SparseSpec(d.sparse_density, d.sparse_chunk, d.sparse_error_decay),
        )
        gate = LossGate(
            self.inner, self.eval_set, robust.gate_batch, robust.gate_keep, self.max_faulty
        )
        self.gate = gate if robust.gate and gate.usable else None
        self.robust = RobustStatus(
            max_faulty=self.max_faulty, aggregation=robust.aggregation, gate=self.gate is not None
        )
        self.refused: dict[str, str] = {}
        self._report()
        self.tokens_per_round = self.h * request.optim.batch_size * request.dataset.seq_len
        progress.set(total_rounds=self.total_rounds)

    @property
    def networked(self) -> bool:
        """Whether this worker has peers to sync with."""
        return bool(self.peers)

    def run(self, stop: threading.Event) -> None:
        """Train until done or `stop` is set; a stop mid-round keeps the last checkpoint.

        The last synced state stays served afterwards, so a late peer can still pull it; the
        owner calls `unserve` when the job is stopped or replaced.
        """
        if self.local is None:
            self._train(stop)
            return
        try:
            if self.local.start(self.req, self.inner, stop):
                self.progress.set(local_ranks=self.local.describe())
                self._train(stop)
        finally:
            self.local.close()
            self.inner.undistribute()

    def _train(self, stop: threading.Event) -> None:
        self._resume(stop)
        if self.local is not None:
            self.local.sync(self.inner, optimizer=True)
        self._publish()
        self.progress.set(weights_sha256=self.weights_digest)
        while self.round < self.total_rounds and not stop.is_set():
            started = time.monotonic()
            loss = self._inner_round(stop)
            syncing = time.monotonic()
            if loss is None or not self._outer_step(loss, stop):
                break
            done = time.monotonic()
            self.progress.set(
                tokens_per_s=round(self.tokens_per_round / (done - started), 1),
                sync_s=round(done - syncing, 3),
            )

    def unserve(self) -> None:
        """Stop offering this worker's state to peers."""
        if self.networked:
            self.env.transport.unserve(self.req.task_id)

    def _adopt(self, round_index: int, params: Tensors, momentum: Tensors) -> None:
        missing = set(self.synced) ^ set(params)
        if missing:
            raise ValueError(f"weights do not match the model: {sorted(missing)[:5]}")
        device = self.env.device
        self.synced = {n: params[n].to(device, torch.float32) for n in self.synced}
        self.momentum = {
            n: momentum[n].to(device, torch.float32) if n in momentum else torch.zeros_like(t)
            for n, t in self.synced.items()
        }
        self.inner.load_weights(self.synced)
        self.round = round_index
        self.inner.step = round_index * self.h

    def _resume(self, stop: threading.Event) -> None:
        checkpoint = load_latest(self.env.checkpoint_dir)
        if checkpoint is not None:
            self._adopt(checkpoint.round, checkpoint.params, checkpoint.momentum)
            self.feedback.residuals = dict(checkpoint.residuals)
            self.inner.load_optimizer_state(checkpoint.optimizer, checkpoint.inner_step)
            self.progress.set(resumed_from=checkpoint.round)
            log.info("resumed task %s at round %d", self.req.task_id, checkpoint.round)
        if self.networked:
            # Serve our own state first, so peers resuming at the same time see it too.
            self._publish()
            offers = self._offers_of(list(self.peers), self.env.join_timeout_s, stop)
            self._catch_up(offers, level=True)
        self.progress.set(outer_round=self.round, inner_step=self.round * self.h)

    def _offers_of(
        self, peers: list[str], wait_s: float, stop: threading.Event
    ) -> dict[str, dict[int, str]]:
        return peer_states(self.env.transport, peers, self.req.task_id, wait_s, stop)

    def _catch_up(self, offers: dict[str, dict[int, str]], level: bool) -> bool:
        """Take an offered state that enough peers vouch for (`agreement.choose_state`)."""
        adoption = choose_state(
            (self.round, self.base_digest),
            offers,
            self.peers,
            self.req.rank,
            self.max_faulty,
            level,
        )
        if adoption is None:
            return False
        return self._take(adoption.round, adoption.digest, adoption.holders)

    def _take(self, round_index: int, digest: str, holders: list[str]) -> bool:
        """Pull the state hashing to `digest` from the first holder that serves it intact."""
        transport = self.env.transport
        for holder in holders:
            try:
                snapshot = pull_snapshot(
                    transport,
                    holder,
                    self.req.task_id,
                    round_index,
                    layout=self.layout,
                    digest=digest,
                )
            except Exception as exc:  # try the next holder of that state
                log.warning("pull from %s refused or failed: %s", holder, exc)
                self._refuse(holder, str(exc))
                continue
            self._adopt(snapshot.round, snapshot.params, snapshot.momentum)
            self._announce(self._publish())
            self.progress.set(pulled_from=holder)
            log.info("task %s: took round %d from %s", self.req.task_id, self.round, holder)
            return True
        return False

    def _refuse(self, peer: str, why: str) -> None:
        self.refused[peer] = why[:300]
        self._report(refused_states=dict(self.refused))

    def _report(self, **fields: object) -> None:
        self.robust = self.robust.model_copy(update=fields)
        self.progress.set(robust=self.robust)

    def _announce(self, digest: str) -> None:
        """Count for the state just taken in the votes of peers still waiting on this round."""
        announce(self.env.transport, self.peers, self.req.task_id, self.round, digest)

    def _publish(self) -> str:
        """Serve the synced state; returns its state hash, which also names the next round."""
        snapshot = Snapshot(
            round=self.round,
            params={n: t.detach().cpu() for n, t in self.synced.items()},
            momentum={n: t.detach().cpu() for n, t in self.momentum.items()},
        )
        self.provider.publish(snapshot)
        if self.networked:
            self.env.transport.serve(self.req.task_id, self.provider)
        self.base_digest = snapshot.state_digest()
        self.weights_digest = snapshot.digest()
        return self.base_digest

    def _inner_round(self, stop: threading.Event) -> float | None:
        losses = []
        first = self.round * self.h
        for step in range(first, first + self.h):
            if stop.is_set():
                return None
            batch = self.batches.batch(step, self.req.optim.batch_size)
            if self.local is None:
                losses.append(self.inner.train_step(batch))
            else:
                losses.append(self.local.step(self.inner, batch, step))
            self.progress.set(inner_step=step + 1)
        return sum(losses) / len(losses)

    def _exchange(self, grads: Tensors, stop: threading.Event) -> RoundResult:
        if not self.networked:
            return RoundResult(average=grads, results={self.req.rank: "self"}, failures={})
        result = run_round(
            self.env.transport,
            self.peers,
            self.round_config,
            self.round,
            {n: g.cpu() for n, g in grads.items()},
            float(self.tokens_per_round),
            self.feedback,
            stop,
            base=self.base_digest,
            aggregate=self._gated if self.gate is not None else None,
        )
        self.progress.add_bytes(result.bytes_sent, result.bytes_received)
        self.progress.set(
            peers_alive=sorted(p for p in result.results.values() if p != "self"),
            round_failures=result.failures,
        )
        return result

    def _gated(self, contributions: Mapping[int, Tensors], names: Mapping[int, str]) -> Tensors:
        """Aggregate only the contributions the loss gate keeps."""
        assert self.gate is not None
        scored = self.gate.score(self.synced, contributions, self.round)
        kept = scored.kept or [self.req.rank]
        self._report(
            gate_scores={names[r]: round(s, 6) for r, s in scored.scores.items()},
            gate_kept=[names[r] for r in kept],
        )
        r = self.req.diloco.robust
        chosen = {rank: contributions[rank] for rank in kept}
        return combine_all(chosen, r.aggregation, self.max_faulty, r.clip_factor)

    def _outer_step(self, loss: float, stop: threading.Event) -> bool:
        """Sync and apply one outer step; False when a stop cut the round short."""
        if self.local is not None:
            self.progress.set(local_weights_agree=self.local.weights_agree(self.inner))
        result = self._exchange(pseudo_gradient(self.synced, self.inner.weights()), stop)
        if stop.is_set():
            return False
        d = self.req.diloco
        synced: Tensors = {}
        momentum: Tensors = {}
        for name, param in self.synced.items():
            synced[name], momentum[name] = nesterov_outer_step(
                param,
                result.average[name].to(param.device),
                self.momentum[name],
                lr=d.outer_lr,
                mu=d.outer_momentum,
                nesterov=d.nesterov,
            )
        self.synced, self.momentum = synced, momentum
        self.inner.load_weights(self.synced)
        self.round += 1
        self._agree(self._publish(), result, stop)
        late = [p for p, why in result.failures.items() if "deadline" in why]
        alone = len(result.results) == 1  # heard from nobody: defer to a peer that is level
        if late and self._catch_up(self._offers_of(list(self.peers), 0.0, stop), level=alone):
            self.progress.set(weights_sha256=self.weights_digest)
        if self.local is not None:
            self.local.sync(self.inner)
        self.progress.set(outer_round=self.round, inner_step=self.round * self.h)
        self.progress.record_round(
            self.round, loss, self.inner.evaluate(self.eval_set), self.weights_digest
        )
        every = self.req.checkpoint.every_outer_steps
        if self.round % every == 0 or self.round == self.total_rounds:
            self._checkpoint()
        return True

    def _agree(self, digest: str, result: RoundResult, stop: threading.Event) -> None:
        """State-hash vote; a worker outside the winning group takes the winners' state."""
        if not self.networked:
            self.progress.set(weights_sha256=self.weights_digest, weights_agree=True)
            return
        transport = self.env.transport
        reachable = {
            p: r for p, r in self.peers.items() if not result.failures.get(p, "").startswith("send")
        }
        # Every reachable peer, not only those heard from this round: a worker that missed a
        # live peer's pseudo-gradient learns from that peer's hash that it is the odd one out.
        outcome = vote(
            transport,
            reachable,
            list(reachable),
            task=self.req.task_id,
            round_index=self.round,
            my_rank=self.req.rank,
            digest=digest,
            # Peers that heard from a late worker may still be waiting out the round deadline.
            timeout_s=self.req.diloco.round_timeout_s + self.env.vote_timeout_s,
            stop=stop,
            max_faulty=self.max_faulty,
        )
        agree = outcome.agrees(digest)
        if not agree and self._take(self.round, outcome.winner, outcome.holders):
            agree = True
            log.warning("state differed from the majority; took the winners' round %d", self.round)
        self.progress.set(weights_sha256=self.weights_digest, weights_agree=agree)

    def _checkpoint(self) -> None:
        checkpoint = Checkpoint(
            round=self.round,
            inner_step=self.round * self.h,
            params=self.synced,
            momentum=self.momentum,
            residuals=self.feedback.residuals,
            optimizer=self.inner.optimizer_state(),
            meta={"task_id": self.req.task_id, "rank": self.req.rank},
        )
        path = save_checkpoint(
            self.env.checkpoint_dir, checkpoint, self.model_config, self.req.checkpoint.keep
        )
        self.progress.set(last_checkpoint=str(path))
