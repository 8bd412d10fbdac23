"""Test helpers of mlnode-train: a tiny model config and corpus, follower weight hashes.

`mesh_body` is the common part of a request of a worker among peers; `CLUSTER_NODE_ENV` is the
environment of real nodes that train together on loopback.

`MemoryHub` / `MemoryTransport` are the names train's tests knew the in-memory transport by; they
are `mlnode.common.testing`'s `TransportHub` / `FakeTransport`, the one fake of every package.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlnode.common.testing.fake_transport import FakeTransport as MemoryTransport
from mlnode.common.testing.fake_transport import TransportHub as MemoryHub

__all__ = [
    "CLUSTER_NODE_ENV",
    "TINY_LLAMA",
    "MemoryHub",
    "MemoryTransport",
    "follower_hashes",
    "mesh_body",
    "write_tiny_corpus",
]

#: A Llama small enough to train a round in seconds on a CPU (`{"model": {"config": ...}}`).
TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}

#: The environment of a real MLNode (`MLNodeProcess`) that trains with others on loopback: CPU,
#: one thread, votes and joins bounded for a test.
CLUSTER_NODE_ENV: dict[str, str] = {
    "MLNODE_GRPC_HOST": "127.0.0.1",
    "MLNODE_TRAIN_DEVICE": "cpu",
    "MLNODE_TRAIN_TORCH_THREADS": "1",
    "MLNODE_TRAIN_VOTE_TIMEOUT_S": "10",
    "MLNODE_TRAIN_JOIN_TIMEOUT_S": "20",
    "OMP_NUM_THREADS": "1",
    "MLNODE_LOG_LEVEL": "WARNING",
}


def mesh_body(
    task_id: str,
    rank: int,
    world: int,
    model: Mapping[str, Any],
    corpus: Path,
    seq_len: int,
    **fields: Any,
) -> dict[str, Any]:
    """A POST /train/start body of worker `rank` among `world` peers named `w0`, `w1`, ...

    It trains `model` (a config) on `corpus`, a tenth held out for eval; `fields` (diloco, optim,
    seed, ...) follow.
    """
    return {
        "task_id": task_id,
        "model": {"config": dict(model)},
        "dataset": {"path": str(corpus), "seq_len": seq_len, "eval_fraction": 0.1},
        "rank": rank,
        "world_size": world,
        "peers": [{"peer_id": f"w{r}", "rank": r} for r in range(world) if r != rank],
        **fields,
    }


SUBJECTS = ("the cat", "a dog", "my friend", "the bird", "our teacher", "a child")
VERBS = ("sees", "likes", "finds", "eats", "draws", "brings")
OBJECTS = ("the ball.", "a red apple.", "the green book.", "some bread.", "a small box.")


def write_tiny_corpus(path: Path, sentences: int = 600, seed: int = 0) -> Path:
    """A small learnable text made locally: random sentences from a tiny grammar."""
    rng = random.Random(seed)
    lines = [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        for _ in range(sentences)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def follower_hashes(log_dir: Path) -> dict[int, str]:
    """The last weight hash each follower logged under `log_dir` (local rank -> sha256)."""
    found: dict[int, str] = {}
    for path in sorted(log_dir.glob("local-rank-*.log")):
        rank = int(path.stem.rsplit("-", 1)[1])
        hashes = re.findall(r"weights sha256 ([0-9a-f]{64})", path.read_text())
        if hashes:
            found[rank] = hashes[-1]
    return found
