"""The inner loop under torch.distributed: two CPU processes (gloo) stand in for two local GPUs."""

import faulthandler
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.distributed import TCPStore
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


def batch() -> torch.Tensor:
    return torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(3))


#: A rank still alive after this long is stuck; it prints every thread's stack and exits.
RANK_LIMIT_S = 150


def ddp_worker(rank: int, out: str, port: int) -> None:
    faulthandler.dump_traceback_later(RANK_LIMIT_S, exit=True)
    torch.set_num_threads(1)
    timeout = timedelta(seconds=60)
    store = TCPStore("127.0.0.1", port, 2, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=timeout)
    try:
        loop = InnerLoop(build_model(ModelSpec(config=TINY), 0), OPTIM, torch.device("cpu"))
        assert isinstance(loop.forward_model, DistributedDataParallel)
        loop.train_step(batch()[rank * 4 : rank * 4 + 4])
        save_file({n: t.contiguous() for n, t in loop.weights().items()}, f"{out}/rank{rank}.st")
    finally:
        dist.destroy_process_group()


def test_two_local_processes_step_like_one_on_the_whole_batch(tmp_path: Path) -> None:
    # The test hosts the store the way a node's rank 0 does: bound to a free port at once, so
    # no other process can take the port between choosing and binding it.
    store = TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False)
    # spawn, not fork: the parent may already hold OpenMP and gRPC threads.
    context = mp.start_processes(
        ddp_worker, args=(str(tmp_path), store.port), nprocs=2, start_method="spawn", join=False
    )
    deadline = time.monotonic() + RANK_LIMIT_S + 30
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two ranks did not finish within {RANK_LIMIT_S + 30} s")

    single = InnerLoop(
        build_model(ModelSpec(config=TINY), 0),
        OPTIM.model_copy(update={"batch_size": 8}),
        torch.device("cpu"),
    )
    single.train_step(batch())
    ranks = [load_file(str(tmp_path / f"rank{r}.st")) for r in range(2)]
    for name, weight in single.weights().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        assert torch.allclose(ranks[0][name], weight, atol=1e-5), name
