"""Byzantine attackers among honest DiLoCo workers, in threads over the in-memory transport.

Seven workers, two of them attackers (f = 2 by default for seven): in every attack no honest
worker takes an attacker's state, none fails, the honest workers end on one hash and their eval
loss stays within 5% of a clean run of the same seed, where the two workers are honest.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from mlnode.common.testing import TransportHub
from mlnode.train.adversary import TAKEOVER_LEAD, Attack, AttackerTrainer
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import write_tiny_corpus
from mlnode.train.trainer import DilocoTrainer, TrainerEnv

WORLD = 7
ATTACKERS = (0, 4)  # rank 0 wins every tie of the old rules
ROUNDS = 3


def body(corpus: Path, rank: int, robust: dict[str, Any]) -> TrainRequest:
    return TrainRequest.model_validate(
        {
            "task_id": "attack",
            "model": {
                "config": {
                    "model_type": "llama",
                    "vocab_size": 256,
                    "hidden_size": 16,
                    "intermediate_size": 32,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "num_key_value_heads": 2,
                    "max_position_embeddings": 32,
                }
            },
            "dataset": {"path": str(corpus), "seq_len": 16, "eval_fraction": 0.1},
            "rank": rank,
            "world_size": WORLD,
            "peers": [{"peer_id": f"w{r}", "rank": r} for r in range(WORLD) if r != rank],
            "diloco": {
                "inner_steps": 4,
                "round_timeout_s": 8,
                "chunk_timeout_s": 8,
                "robust": robust,
            },
            "optim": {"lr": 3e-3, "total_steps": 4 * ROUNDS, "batch_size": 4},
            "checkpoint": {"every_outer_steps": ROUNDS},
            "seed": 3,
        }
    )


def train(root: Path, corpus: Path, attack: Attack, robust: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every worker to the end; returns each worker's final status (attackers' too)."""
    hub = TransportHub()
    trainers: list[DilocoTrainer] = []
    progress: list[TrainProgress] = []
    for rank in range(WORLD):
        req = body(corpus, rank, robust)
        env = TrainerEnv(
            hub.node(f"w{rank}"),
            torch.device("cpu"),
            root / f"{attack}-{rank}",
            vote_timeout_s=5.0,
            join_timeout_s=5.0,
        )
        prog = TrainProgress(req.task_id, rank, WORLD)
        if rank in ATTACKERS:
            allies = frozenset(f"w{r}" for r in ATTACKERS)
            trainers.append(AttackerTrainer(req, env, prog, attack, allies))
        else:
            trainers.append(DilocoTrainer(req, env, prog))
        progress.append(prog)
    errors: list[BaseException] = []

    def work(trainer: DilocoTrainer) -> None:
        try:
            trainer.run(threading.Event())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in trainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    finals = [p.snapshot() for p in progress]
    for rank, trainer in enumerate(trainers):
        finals[rank]["final_eval"] = trainer.inner.evaluate(trainer.eval_set)
    return finals


def honest(finals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for rank, f in enumerate(finals) if rank not in ATTACKERS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", sentences=400)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> list[dict[str, Any]]:
    return train(tmp_path_factory.mktemp("clean"), corpus, Attack.NONE, {})


def assert_honest_unharmed(finals: list[dict[str, Any]], clean: list[dict[str, Any]]) -> None:
    attackers = {f"w{r}" for r in ATTACKERS}
    good = honest(finals)
    for status in good:
        assert status["outer_round"] == ROUNDS  # not a claimed later round
        assert status["pulled_from"] not in attackers
        assert status["weights_agree"] is True
    digests = {s["weights_sha256"] for s in good}
    assert len(digests) == 1, digests
    per_round: dict[int, set[str]] = {}
    for status in good:
        for entry in status["weights_history"]:
            per_round.setdefault(entry["outer_round"], set()).add(entry["sha256"])
    assert all(len(found) == 1 for found in per_round.values()), per_round
    reference = honest(clean)[0]["final_eval"]
    assert abs(good[0]["final_eval"] - reference) <= 0.05 * reference


@pytest.mark.parametrize("attack", [a for a in Attack if a is not Attack.NONE])
def test_honest_workers_shrug_off(
    attack: Attack, tmp_path: Path, corpus: Path, clean: list[dict[str, Any]]
) -> None:
    finals = train(tmp_path, corpus, attack, {})

    assert_honest_unharmed(finals, clean)
    status = honest(finals)[0]
    if attack in (Attack.NAN, Attack.WRONG_SHAPE, Attack.WEIGHT):
        assert all("invalid pseudo-gradient" in status["round_failures"][f"w{r}"] for r in ATTACKERS)
    if attack is Attack.TAKEOVER:
        assert max(finals[ATTACKERS[0]]["outer_round"], 0) < TAKEOVER_LEAD
    assert status["robust"]["max_faulty"] == 2 and status["robust"]["gate"] is True


def test_the_gate_scores_show_in_status_and_drop_a_sign_flip(
    tmp_path: Path, corpus: Path, clean: list[dict[str, Any]]
) -> None:
    finals = train(tmp_path, corpus, Attack.SIGN_FLIP, {"aggregation": "mean"})

    robust = honest(finals)[0]["robust"]
    assert set(robust["gate_scores"]) == {"self"} | {f"w{r}" for r in range(WORLD)} - {"w1"}
    assert not {f"w{r}" for r in ATTACKERS} & set(robust["gate_kept"])
    assert len(robust["gate_kept"]) == WORLD - 2
    assert_honest_unharmed(finals, clean)


def test_plain_mean_without_the_gate_is_poisoned_by_a_scaled_attack(
    tmp_path: Path, corpus: Path, clean: list[dict[str, Any]]
) -> None:
    finals = train(tmp_path, corpus, Attack.SCALED, {"aggregation": "mean", "gate": False})

    good = honest(finals)
    assert len({s["weights_sha256"] for s in good}) == 1  # still one state, a worse one
    reference = honest(clean)[0]["final_eval"]
    assert good[0]["final_eval"] > 1.05 * reference


