"""Byzantine attackers among honest DiLoCo workers, in threads over the in-memory transport.

Seven workers, two of them attackers (f = 2 by default for seven), with the default defences
(centered clipping behind the loss gate). Each run mounts a group of attacks, one per round, and
the far-ahead takeover throughout in the loud group: no honest worker takes an attacker's state,
none fails, the honest workers end on one hash and their eval loss stays within 5% of a clean
run of the same seed, where the two workers are honest. Plain mean, for contrast, is poisoned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import mesh_body, write_tiny_corpus
from mlnode.train.testing.adversary import TAKEOVER_LEAD, Attack, run_workers

WORLD = 7
ATTACKERS = (0, 4)  # rank 0 wins every tie of the old rules
ROUNDS = 3
MODEL = {
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}


def body(corpus: Path, rank: int, robust: dict[str, Any]) -> TrainRequest:
    return TrainRequest.model_validate(
        mesh_body(
            "attack",
            rank,
            WORLD,
            MODEL,
            corpus,
            16,
            diloco={"inner_steps": 4, "round_timeout_s": 8, "chunk_timeout_s": 8, "robust": robust},
            optim={"lr": 3e-3, "total_steps": 4 * ROUNDS, "batch_size": 4},
            checkpoint={"every_outer_steps": ROUNDS},
            seed=3,
        )
    )


def train(
    root: Path, corpus: Path, attacks: list[Attack], robust: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run every worker to the end; returns each worker's final status (attackers' too)."""
    requests = [body(corpus, rank, robust) for rank in range(WORLD)]
    finals = run_workers(requests, root, dict.fromkeys(ATTACKERS, attacks) if attacks else {})
    assert not finals[0]["errors"], finals[0]["errors"]
    return finals


def honest(finals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for rank, f in enumerate(finals) if rank not in ATTACKERS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", sentences=400)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> list[dict[str, Any]]:
    return train(tmp_path_factory.mktemp("clean"), corpus, [], {})


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


GROUPS = {
    # TAKEOVER throughout; the others one per round in turn.
    "loud": [Attack.TAKEOVER, Attack.SCALED, Attack.SIGN_FLIP, Attack.RANDOM],
    "malformed": [Attack.NAN, Attack.WRONG_SHAPE, Attack.WEIGHT],
    "subtle": [Attack.ALIE, Attack.IPM, Attack.ALIE],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_honest_workers_shrug_off(
    group: str, tmp_path: Path, corpus: Path, clean: list[dict[str, Any]]
) -> None:
    finals = train(tmp_path, corpus, GROUPS[group], {})

    assert_honest_unharmed(finals, clean)
    status = honest(finals)[0]
    robust = status["robust"]
    assert robust["max_faulty"] == 2 and robust["gate"] is True
    assert len(robust["gate_kept"]) == len(robust["gate_scores"]) - 2  # all but f
    if group == "malformed":  # refused before use: never even scored
        assert all(
            "invalid pseudo-gradient" in status["round_failures"][f"w{r}"] for r in ATTACKERS
        )
        assert not {f"w{r}" for r in ATTACKERS} & set(robust["gate_scores"])
    if group == "loud":  # scored, and the gate leaves them out
        assert not {f"w{r}" for r in ATTACKERS} & set(robust["gate_kept"])
        assert all(finals[r]["outer_round"] < TAKEOVER_LEAD for r in ATTACKERS)


def test_plain_mean_without_the_gate_is_poisoned_by_a_scaled_attack(
    tmp_path: Path, corpus: Path, clean: list[dict[str, Any]]
) -> None:
    finals = train(tmp_path, corpus, [Attack.SCALED], {"aggregation": "mean", "gate": False})

    good = honest(finals)
    assert len({s["weights_sha256"] for s in good}) == 1  # still one state, a worse one
    reference = honest(clean)[0]["final_eval"]
    assert good[0]["final_eval"] > 1.05 * reference
