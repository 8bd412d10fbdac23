"""One rank of `test_inner_ddp`, run as `python ddp_rank.py RANK OUT_DIR STORE_PORT`.

A script run by path, not a function pickled by the test: a spawned child would have to import the
test module by the name pytest gave it (`packages.train.tests...`), which exists only when the
repository root happens to be on `sys.path`. This file imports installed packages only.
"""

from __future__ import annotations

import faulthandler
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch._C._distributed_c10d import TCPStore
from torch.nn.parallel import DistributedDataParallel

from mlnode.train.inner import InnerLoop
from mlnode.train.model import build_model
from mlnode.train.schemas import ModelSpec, OptimConfig

TINY = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 64,
}
OPTIM = OptimConfig(lr=1e-2, total_steps=10, batch_size=4, weight_decay=0.0)
WORLD = 2


def batch() -> torch.Tensor:
    """The whole batch both ranks split (and the single process takes at once)."""
    return torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(3))


def main(rank: int, out: str, port: int) -> None:
    """Join the group on the test's store, take one DDP step on this rank's half, save weights."""
    faulthandler.dump_traceback_later(150, exit=True)  # a stuck rank shows where it waits
    torch.set_num_threads(1)
    timeout = timedelta(seconds=60)
    store = TCPStore("127.0.0.1", port, WORLD, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD, timeout=timeout)
    try:
        step(rank, out)
        # Neither rank leaves while the other may still talk to it.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def step(rank: int, out: str) -> None:
    """One DDP step on this rank's half of the batch; the wrapped model is freed on return,
    while the process group it holds is still up."""
    loop = InnerLoop(build_model(ModelSpec(config=TINY), 0), OPTIM, torch.device("cpu"))
    assert isinstance(loop.forward_model, DistributedDataParallel)
    loop.train_step(batch()[rank * 4 : rank * 4 + 4])
    save_file({n: t.contiguous() for n, t in loop.weights().items()}, f"{out}/rank{rank}.st")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
