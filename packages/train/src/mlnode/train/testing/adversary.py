"""A malicious DiLoCo worker for attack tests and benchmarks; the service never runs it.

`AttackerTrainer` is a registered worker of the task that follows the protocol where that helps
it and lies where that hurts: it sends crafted pseudo-gradients (scaled, sign-flipped, random,
NaN, wrong shape, an inflated sample count, or the "a little is enough" (ALIE) and inner-product
manipulation (IPM) attacks built from the honest pseudo-gradients it receives first), or claims
a far later round, serves its own state under it and votes for that state's hash. After each
round it takes the honest majority's state like any worker, so its next pseudo-gradient lands
in the honest workers' round. References: Baruch et al., "A Little Is Enough: Circumventing
Defenses For Distributed Learning", NeurIPS 2019; Xie et al., "Fall of Empires: Breaking
Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2019.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import torch

from mlnode.common.testing import TransportHub
from mlnode.train.diloco.math import Compression, Tensors, decompress
from mlnode.train.diloco.round import ErrorFeedback, RoundResult, receive_until, run_round
from mlnode.train.diloco.sync import Snapshot
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.trainer import DilocoTrainer, TrainerEnv, TrainerParts, build_parts

#: How far ahead the takeover attacker claims to be.
TAKEOVER_LEAD = 1000
ALIE_Z = 1.0
IPM_EPSILON = 0.5


class Attack(StrEnum):
    """What the attacker does."""

    NONE = "none"
    TAKEOVER = "takeover"
    SCALED = "scaled"
    SIGN_FLIP = "sign_flip"
    RANDOM = "random"
    NAN = "nan"
    WRONG_SHAPE = "wrong_shape"
    WEIGHT = "weight"
    ALIE = "alie"
    IPM = "ipm"


OMNISCIENT = (Attack.ALIE, Attack.IPM)


def craft(attack: Attack, own: Tensors, honest: Sequence[Tensors], seed: int) -> Tensors:
    """The pseudo-gradient the attacker sends instead of `own` (`honest`: what peers sent)."""
    gen = torch.Generator().manual_seed(seed)
    out: Tensors = {}
    for name, g in own.items():
        if attack is Attack.SCALED:
            out[name] = g * 100.0
        elif attack is Attack.SIGN_FLIP:
            out[name] = -4.0 * g
        elif attack is Attack.RANDOM:
            out[name] = torch.randn(g.shape, generator=gen) * float(g.abs().max()) * 10
        elif attack is Attack.NAN:
            out[name] = torch.full_like(g, float("nan"))
        elif attack is Attack.WRONG_SHAPE:
            out[name] = torch.zeros(g.numel() + 1)
        elif attack in OMNISCIENT and honest:
            stack = torch.stack([h[name] for h in honest])
            mean = stack.mean(0)
            spread = stack.std(0) if len(honest) > 1 else torch.zeros_like(mean)
            out[name] = mean - ALIE_Z * spread if attack is Attack.ALIE else -IPM_EPSILON * mean
        else:
            out[name] = g
    return out


def attacker_request(request: TrainRequest) -> TrainRequest:
    """The attacker's own settings: plain mean and no gate (it cares about nothing it gets)."""
    robust = request.diloco.robust.model_copy(update={"gate": False, "aggregation": "mean"})
    diloco = request.diloco.model_copy(update={"robust": robust})
    return request.model_copy(update={"diloco": diloco})


class AttackerTrainer(DilocoTrainer):
    """A worker that mounts `attacks`: TAKEOVER throughout, the others one per round in turn."""

    def __init__(
        self,
        request: TrainRequest,
        env: TrainerEnv,
        progress: TrainProgress,
        parts: TrainerParts,
        attacks: Sequence[Attack] = (),
        allies: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(request, env, progress, parts)
        self.takeover = Attack.TAKEOVER in attacks
        self.schedule = [a for a in attacks if a not in (Attack.TAKEOVER, Attack.NONE)]
        #: Fellow attackers: not waited for when reading the honest pseudo-gradients.
        self.allies = allies
        self.fake_digest = ""

    @classmethod
    def build(
        cls,
        request: TrainRequest,
        env: TrainerEnv,
        progress: TrainProgress,
        attacks: Sequence[Attack] = (),
        allies: frozenset[str] = frozenset(),
    ) -> Self:
        """An attacker built from an honest worker's `request` (its model and data too)."""
        request = attacker_request(request)
        return cls(request, env, progress, build_parts(request, env), attacks, allies)

    @property
    def attack(self) -> Attack:
        """The pseudo-gradient attack of this round."""
        return self.schedule[self.round % len(self.schedule)] if self.schedule else Attack.NONE

    def _publish(self) -> str:
        digest = super()._publish()
        if self.takeover:
            torch.manual_seed(self.round)
            fake = Snapshot(
                round=self.round + TAKEOVER_LEAD,
                params={n: torch.randn_like(t.cpu()) for n, t in self.synced.items()},
                momentum={n: torch.zeros_like(t.cpu()) for n, t in self.synced.items()},
            )
            self.provider.publish(fake)
            self.fake_digest = fake.state_digest()
        return digest

    def _agree(self, digest: str, result: RoundResult, stop: threading.Event) -> None:
        # The takeover attacker votes for the far-ahead state it serves, then (losing) takes
        # the honest state like anyone, so it stays in the honest workers' rounds.
        vouched = self.fake_digest if self.takeover else digest
        super()._agree(vouched, result, stop)

    def _peek(self, stop: threading.Event) -> list[Tensors]:
        """The honest pseudo-gradients of this round (the first chunk: the whole tiny model).

        Taking them also empties its inbox, so honest sends to it keep being accepted.
        """
        tag = f"outer-{self.round}-{self.base_digest[:16]}/chunk-0"
        got = receive_until(
            self.env.transport,
            self.req.task_id,
            tag,
            [p for p in self.peers if p not in self.allies],
            self.req.diloco.round_timeout_s,
            stop,
        )
        mode = self.req.diloco.compression
        honest = []
        for wire in got.values():
            try:
                honest.append({n: _decode(wire, n, mode) for n in self.synced})
            except KeyError:
                continue
        return honest

    def _exchange(self, grads: Tensors, stop: threading.Event) -> RoundResult:
        if self.attack is Attack.NONE or not self.networked:
            return super()._exchange(grads, stop)
        honest = self._peek(stop)
        own = {n: g.cpu() for n, g in grads.items()}
        crafted = craft(self.attack, own, honest, self.round)
        weight = 1e9 if self.attack is Attack.WEIGHT else float(self.tokens_per_round)
        quick = dataclasses.replace(self.round_config, timeout_s=0.1, chunk_timeout_s=0.1)
        result = run_round(
            self.env.transport,
            self.peers,
            quick,
            self.round,
            crafted,
            weight,
            ErrorFeedback(),
            stop,
            base=self.base_digest,
        )
        self.progress.add_bytes(result.bytes_sent, result.bytes_received)
        # Its own next state does not matter: the vote hands it the honest one.
        result.average = own
        return result


def _decode(wire: Tensors, name: str, mode: Compression) -> torch.Tensor:
    prefix = f"{name}/"
    parts = {k[len(prefix) :]: t for k, t in wire.items() if k.startswith(prefix)}
    if not parts:
        raise KeyError(name)
    return decompress(parts, mode)


def run_workers(
    requests: Sequence[TrainRequest], root: Path, attacks: Mapping[int, Sequence[Attack]]
) -> list[dict[str, Any]]:
    """Train every worker in a thread over one in-memory hub; ranks in `attacks` attack.

    Returns each worker's final status with `final_eval` and the `errors` any worker raised.
    """
    hub = TransportHub()
    allies = frozenset(f"w{r}" for r in attacks)
    trainers: list[DilocoTrainer] = []
    progress: list[TrainProgress] = []
    for req in requests:
        env = TrainerEnv(
            hub.node(f"w{req.rank}"),
            torch.device("cpu"),
            root / f"{req.task_id}-{req.rank}",
            vote_timeout_s=5.0,
            join_timeout_s=5.0,
        )
        prog = TrainProgress(req.task_id, req.rank, req.world_size)
        if req.rank in attacks:
            trainers.append(AttackerTrainer.build(req, env, prog, attacks[req.rank], allies))
        else:
            trainers.append(DilocoTrainer.build(req, env, prog))
        progress.append(prog)
    errors: list[str] = []

    def work(trainer: DilocoTrainer) -> None:
        try:
            trainer.run(threading.Event())
        except Exception as exc:  # reported to the caller
            errors.append(f"rank {trainer.req.rank}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(t,)) for t in trainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finals = [p.snapshot().model_dump(mode="json") for p in progress]
    for status, trainer in zip(finals, trainers, strict=True):
        status["final_eval"] = trainer.inner.evaluate(trainer.eval_set)
        status["errors"] = errors
    return finals
