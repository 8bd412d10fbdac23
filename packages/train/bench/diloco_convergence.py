"""Convergence and communication of DiLoCo (H inner steps) against averaging every step (H = 1).

Three workers run in threads of this process and exchange pseudo-gradients over the in-memory
transport (`mlnode.common.testing.TransportHub`; the same round code runs over the signed gRPC
transport in the integration test). Both runs see the same samples: batch k of rank r depends
only on (seed, r, k). The baseline averages the weights after every inner step (outer SGD with
lr 1 and no momentum); DiLoCo syncs every H steps with outer lr 0.7 and Nesterov momentum 0.9.
With sparseloco (SparseLoCo, Sarfi et al. 2025) the outer step has no momentum (error feedback
carries what was not sent) and outer lr 1.75: the best of a sweep on this task at density 1/16
without decay (eval loss against H=1: lr 1 +9%, 1.5 +5.8%, 1.75 +2.0%, 2 +3.3%, 2.5 +12%, 3 +31%;
Nesterov 0.9 at lr 0.7 +59%). The error-feedback residual decays by 0.8 each round
(SparseLoCo's beta), which lets density fall to 1/24; the sweep at lr 1.75 (eval loss against
H=1, fewer bytes than H=1): decay 1 at 1/16 +2.0% 1002x; at 1/16 decay 0.95 +0.2%, 0.9 +0.1%,
0.8 -0.1% (~995x); at 1/20 0.95 +1.5%, 0.9 +0.8%, 0.8 +0.5% (~1200x); at 1/24 0.95 +2.8%,
0.9 +1.1%, 0.8 +0.5% (~1400x).
Printed: final eval loss, bytes each worker sent, tokens/s per worker, and whether DiLoCo's eval
loss is within 5% of the baseline while sending at least H times fewer bytes; for sparseloco,
whether it meets the target of >= 1000x fewer bytes than every-step at eval loss within 2%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from mlnode.common.testing import TransportHub
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import mesh_body, write_tiny_corpus
from mlnode.train.trainer import DilocoTrainer, TrainerEnv

WORKERS = 3
MODEL = {
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
}


def request(
    corpus: Path,
    rank: int,
    h: int,
    steps: int,
    outer: dict[str, Any],
    compression: str,
    density: float,
    decay: float,
) -> TrainRequest:
    return TrainRequest.model_validate(
        mesh_body(
            f"bench-h{h}",
            rank,
            WORKERS,
            MODEL,
            corpus,
            64,
            # Plain DiLoCo: the robust rules and the gate are measured by bench/byzantine.py.
            diloco={
                "inner_steps": h,
                "compression": compression,
                "sparse_density": density,
                "sparse_error_decay": decay,
                "robust": {"aggregation": "mean", "gate": False},
                **outer,
            },
            optim={
                "lr": 3e-3,
                "weight_decay": 0.0,
                "warmup_steps": 10,
                "total_steps": steps,
                "batch_size": 8,
            },
            seed=1,
        )
    )


def run(
    corpus: Path,
    root: Path,
    h: int,
    steps: int,
    compression: str = "none",
    device: str = "cpu",
    density: float = 1 / 64,
    outer: dict[str, Any] | None = None,
    decay: float = 1.0,
) -> dict[str, Any]:
    """Train 3 workers to `steps` inner steps each; return eval loss, bytes, tokens/s."""
    if outer is None:
        outer = (
            {"outer_lr": 1.0, "outer_momentum": 0.0, "nesterov": False}
            if h == 1
            else {"outer_lr": 0.7, "outer_momentum": 0.9, "nesterov": True}
        )
    hub = TransportHub()
    trainers, progress = [], []
    for rank in range(WORKERS):
        req = request(corpus, rank, h, steps, outer, compression, density, decay)
        env = TrainerEnv(
            hub.node(f"w{rank}"),
            torch.device(device),
            root / f"h{h}-{compression}-{rank}",
            join_timeout_s=5.0,
        )
        prog = TrainProgress(req.task_id, rank, WORKERS)
        trainers.append(DilocoTrainer.build(req, env, prog))
        progress.append(prog)
    stop = threading.Event()
    threads = [threading.Thread(target=t.run, args=(stop,)) for t in trainers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    final = [p.snapshot() for p in progress]
    digests = {f.weights_sha256 for f in final}
    tokens = steps * 8 * 64
    return {
        "eval_loss": trainers[0].inner.evaluate(trainers[0].eval_set),
        "bytes_sent": max(f.bytes_sent for f in final),
        "tokens_per_s": tokens / elapsed,
        "identical": len(digests) == 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inner-steps", type=int, default=20, help="H of the DiLoCo run")
    parser.add_argument("--steps", type=int, default=300, help="inner steps per worker")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the 3 workers share it")
    parser.add_argument("--density", type=float, default=1 / 24, help="sparseloco's top-k share")
    parser.add_argument(
        "--error-decay", type=float, default=0.8, help="sparseloco's error-feedback decay"
    )
    parser.add_argument(
        "--sparse-outer-lr", type=float, default=1.75, help="sparseloco's outer lr (no momentum)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = write_tiny_corpus(root / "corpus.txt", sentences=4000)
        rows = {
            "H=1 (average every step)": run(corpus, root, 1, args.steps, device=args.device),
            f"DiLoCo H={args.inner_steps}": run(
                corpus, root, args.inner_steps, args.steps, device=args.device
            ),
            f"DiLoCo H={args.inner_steps} int8": run(
                corpus, root, args.inner_steps, args.steps, "int8", args.device
            ),
            f"DiLoCo H={args.inner_steps} sparseloco": run(
                corpus,
                root,
                args.inner_steps,
                args.steps,
                "sparseloco",
                args.device,
                args.density,
                # SparseLoCo's outer step: error feedback is the only memory, no outer momentum.
                {"outer_lr": args.sparse_outer_lr, "outer_momentum": 0.0, "nesterov": False},
                args.error_decay,
            ),
        }
    print(
        f"{WORKERS} workers in one process, in-memory transport, {args.steps} inner steps each,"
        f" batch 8 x 64 tokens, llama 2x64 byte-level; torch threads 1; device {args.device}"
    )
    print(
        f"{'run':<32}{'eval loss':>10}{'vs H=1':>8}{'bytes sent/worker':>19}{'fewer':>9}"
        f"{'tokens/s/worker':>17}{'identical':>11}"
    )
    base = next(iter(rows.values()))
    for name, row in rows.items():
        loss_gap = (row["eval_loss"] - base["eval_loss"]) / base["eval_loss"]
        fewer = base["bytes_sent"] / row["bytes_sent"]
        print(
            f"{name:<32}{row['eval_loss']:>10.4f}{loss_gap:>+8.2%}{row['bytes_sent']:>19,}"
            f"{fewer:>8.0f}x{row['tokens_per_s']:>17.0f}{str(row['identical']):>11}"
        )
    diloco, sparse = list(rows.values())[1], list(rows.values())[3]
    gap = (diloco["eval_loss"] - base["eval_loss"]) / base["eval_loss"]
    ratio = base["bytes_sent"] / diloco["bytes_sent"]
    ok = gap <= 0.05 and ratio >= args.inner_steps and all(r["identical"] for r in rows.values())
    print(
        f"DiLoCo H={args.inner_steps} vs H=1: eval loss {gap:+.2%} (limit +5%), "
        f"{ratio:.1f}x fewer bytes (need >= {args.inner_steps}x): {'PASS' if ok else 'FAIL'}"
    )
    sparse_gap = (sparse["eval_loss"] - base["eval_loss"]) / base["eval_loss"]
    sparse_ratio = base["bytes_sent"] / sparse["bytes_sent"]
    print(
        f"sparseloco H={args.inner_steps} vs H=1: eval loss {sparse_gap:+.2%} (target within 2%), "
        f"{sparse_ratio:.0f}x fewer bytes (target >= 1000x): "
        f"{'MET' if sparse_gap <= 0.02 and sparse_ratio >= 1000 else 'NOT MET'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
