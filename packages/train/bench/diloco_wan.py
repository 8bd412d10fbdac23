"""Wall time of a DiLoCo round across a shaped WAN, with the signed gRPC transport.

Three workers run in threads of this process, each with its own `GrpcTransport`; every worker
reaches another through a relay on loopback (`mlnode.common.testing.shaping_relay`) that adds
half the RTT each way and caps each connection at the given rate. The model is a 4 x 256 llama
(~11 MB of fp32 pseudo-gradient per worker and round). Printed: the wall time of the last round
(H inner steps plus the outer step) and of its outer step alone (exchange, aggregation, hash
vote: progress `sync_s` of the worker that waited least for the others) per RTT and compression,
and the same on plain loopback, whose difference is what the link costs.
Usage: python diloco_wan.py [--rtt-ms 50 150] [--rate-mbit 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from mlnode.common.testing.shaping_relay import ShapingRelay
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import mesh_body, write_tiny_corpus
from mlnode.train.trainer import DilocoTrainer, TrainerEnv

WORKERS = 3
H = 5
TASK = "wan"
MODEL = {
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
}


def request(corpus: Path, rank: int, rounds: int, compression: str) -> TrainRequest:
    return TrainRequest.model_validate(
        mesh_body(
            TASK,
            rank,
            WORKERS,
            MODEL,
            corpus,
            64,
            diloco={
                "inner_steps": H,
                "compression": compression,
                "sparse_density": 1 / 16,
                "robust": {"aggregation": "mean", "gate": False},
            },
            optim={"lr": 3e-3, "total_steps": H * rounds, "batch_size": 8},
            # No checkpoint inside the timed rounds: the outer step is the link's and the maths'.
            checkpoint={"every_outer_steps": 1000},
            seed=1,
        )
    )


def run(
    corpus: Path, root: Path, rounds: int, compression: str, rtt_s: float, rate_bps: float
) -> dict[str, Any]:
    """One job; the last round's wall time and the bytes a worker sent."""
    settings = TransportSettings(host="127.0.0.1", port=0)
    identities = [Identity.generate() for _ in range(WORKERS)]
    transports = [
        GrpcTransport(settings, identity=identities[r], peers=KnownPeers()) for r in range(WORKERS)
    ]
    for transport in transports:
        transport.start()
    relays = [
        ShapingRelay(int(t.port or 0), rtt_s, rate_bps).start() if rtt_s > 0 else None
        for t in transports
    ]
    for rank, transport in enumerate(transports):
        for other in range(WORKERS):
            if other != rank:
                relay = relays[other]
                port = relay.port if relay is not None else transports[other].port
                key = identities[other].public_key
                address = f"127.0.0.1:{port}"
                transport.peers.put(Peer(f"w{other}", key, address, frozenset({TASK})))
    progress = [TrainProgress(TASK, r, WORKERS) for r in range(WORKERS)]
    trainers = [
        DilocoTrainer.build(
            request(corpus, r, rounds, compression),
            TrainerEnv(transports[r], torch.device("cpu"), root / f"{compression}-{rtt_s}-{r}"),
            progress[r],
        )
        for r in range(WORKERS)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=t.run, args=(stop,)) for t in trainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for transport in transports:
        transport.stop()
    for relay in relays:
        if relay is not None:
            relay.stop()
    final = [p.snapshot() for p in progress]
    tokens = H * 8 * 64
    return {
        "round_s": max(tokens / (f.tokens_per_s or float("nan")) for f in final),
        # The last worker to reach the exchange waits least: its outer step is the link's cost.
        "sync_s": min(f.sync_s or float("nan") for f in final),
        "bytes": max(f.bytes_sent for f in final) // rounds,
        "identical": len({f.weights_sha256 for f in final}) == 1,
        "rounds": min(f.outer_round for f in final),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[50.0, 150.0])
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{WORKERS} workers in one process, signed gRPC transport, H={H}, llama 4x256, "
        f"{args.rate_mbit:.0f} Mbit/s per connection each way, no loss; last of {args.rounds} "
        "rounds"
    )
    print(
        f"{'link':<14}{'compression':<13}{'round s':>9}{'outer step s':>14}"
        f"{'bytes/round/worker':>20}{'same':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = write_tiny_corpus(root / "corpus.txt", sentences=2000)
        for rtt_ms in [0.0, *args.rtt_ms]:
            for compression in ("none", "sparseloco"):
                row = run(
                    corpus, root, args.rounds, compression, rtt_ms / 1000, args.rate_mbit * 1e6
                )
                link = "loopback" if rtt_ms == 0 else f"RTT {rtt_ms:.0f} ms"
                print(
                    f"{link:<14}{compression:<13}{row['round_s']:>9.2f}{row['sync_s']:>14.2f}"
                    f"{row['bytes']:>20,}"
                    f"{str(row['identical'] and row['rounds'] == args.rounds):>6}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
