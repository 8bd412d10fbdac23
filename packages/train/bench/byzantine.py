"""Robust aggregation and the loss gate, clean and under attack, in one run.

Five DiLoCo workers in threads of this process over the in-memory transport
(`mlnode.common.testing.TransportHub`); rank 0 is an attacker (`mlnode.train.testing.adversary`)
or, in the clean rows, an honest worker. Every row uses the same seed and samples. For each
aggregation (mean, median, trimmed mean, centered clipping, Krum, mean behind the loss gate, and
the default: centered clipping behind the gate) it prints the honest workers' final eval loss, its
gap to the clean run of the same aggregation and to the clean plain mean, the bytes each honest
worker sent per round, whether the honest workers ended on one state and whether any of them took
the attacker's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import TINY_LLAMA, mesh_body, write_tiny_corpus
from mlnode.train.testing.adversary import Attack, run_workers

WORKERS = 5
ATTACKER = 0
CONFIGS: dict[str, dict[str, Any]] = {
    "mean": {"aggregation": "mean", "gate": False},
    "median": {"aggregation": "median", "gate": False},
    "trimmed_mean": {"aggregation": "trimmed_mean", "gate": False},
    "centered_clip": {"aggregation": "centered_clip", "gate": False},
    "krum": {"aggregation": "krum", "gate": False},
    "gate+mean": {"aggregation": "mean", "gate": True},
    "gate+clip (default)": {},
}
SCENARIOS = [Attack.NONE, *[a for a in Attack if a is not Attack.NONE]]


def requests(
    corpus: Path, task: str, robust: dict[str, Any], h: int, rounds: int
) -> list[TrainRequest]:
    return [
        TrainRequest.model_validate(
            mesh_body(
                task,
                rank,
                WORKERS,
                TINY_LLAMA,
                corpus,
                32,
                diloco={
                    "inner_steps": h,
                    "round_timeout_s": 30,
                    "chunk_timeout_s": 30,
                    "robust": robust,
                },
                optim={
                    "lr": 3e-3,
                    "weight_decay": 0.0,
                    "total_steps": h * rounds,
                    "batch_size": 8,
                },
                checkpoint={"every_outer_steps": rounds},
                seed=5,
            )
        )
        for rank in range(WORKERS)
    ]


def run(
    corpus: Path, root: Path, config: str, attack: Attack, h: int, rounds: int
) -> dict[str, Any]:
    task = f"{config.split()[0].replace('+', '-')}-{attack}"
    attacks = {} if attack is Attack.NONE else {ATTACKER: [attack]}
    started = time.monotonic()
    finals = run_workers(requests(corpus, task, CONFIGS[config], h, rounds), root, attacks)
    honest = [f for rank, f in enumerate(finals) if rank != ATTACKER]
    return {
        "eval_loss": honest[0]["final_eval"],
        "bytes_per_round": max(f["bytes_sent"] for f in honest) / rounds,
        "one_state": len({f["weights_sha256"] for f in honest}) == 1,
        "took_attacker": any(f["pulled_from"] == f"w{ATTACKER}" for f in honest)
        or any(f["outer_round"] != rounds for f in honest),
        "errors": honest[0]["errors"],
        "seconds": time.monotonic() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inner-steps", type=int, default=5, help="H")
    parser.add_argument("--rounds", type=int, default=6, help="outer rounds")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = args.configs.split(",")
    rows: dict[tuple[str, Attack], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = write_tiny_corpus(root / "corpus.txt", sentences=2000)
        for config in configs:
            for attack in SCENARIOS:
                rows[(config, attack)] = run(
                    corpus, root, config, attack, args.inner_steps, args.rounds
                )
    print(
        f"{WORKERS} workers (rank {ATTACKER} attacks; clean: honest), in-memory transport, "
        f"H={args.inner_steps}, {args.rounds} rounds, batch 8 x 32 tokens, llama 1x32 byte-level"
    )
    header = f"{'aggregation':<21}{'scenario':<13}{'eval loss':>10}{'vs clean':>10}"
    print(header + f"{'vs mean':>9}{'bytes/round':>13}{'one state':>11}{'took attacker':>15}")
    failed = False
    base = rows.get(("mean", Attack.NONE))
    for (config, attack), row in rows.items():
        clean = rows[(config, Attack.NONE)]["eval_loss"]
        gap = (row["eval_loss"] - clean) / clean
        vs_mean = (row["eval_loss"] - base["eval_loss"]) / base["eval_loss"] if base else 0.0
        print(
            f"{config:<21}{attack:<13}{row['eval_loss']:>10.4f}{gap:>+10.1%}{vs_mean:>+9.1%}"
            f"{row['bytes_per_round']:>13,.0f}{str(row['one_state']):>11}"
            f"{str(row['took_attacker']):>15}"
        )
        failed |= bool(row["errors"]) or row["took_attacker"] or not row["one_state"]
        if row["errors"]:
            print("   errors:", row["errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
