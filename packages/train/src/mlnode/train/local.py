"""Several devices of one node: one process per device, joined by torch.distributed (DDP).

What every local rank shares: the follower's spec, rank 0's commands and the collectives.

The node process's trainer thread is local rank 0: it alone talks to peers, votes and writes
checkpoints. It starts local ranks 1..N-1 as subprocesses (`python -m mlnode.train.follower`, the
request as JSON on stdin), each in a session of its own, so stopping kills them with whatever they
started. They meet on a fresh TCPStore of rank 0 (127.0.0.1, a free port per job) and form the
default process group (nccl on GPUs, gloo on CPU), destroyed when the job ends.

Rank 0 posts each command (`step`, `sync`, `check`, `stop`) as JSON under a numbered store key: a
follower waits for the next one as long as an outer round takes, with no collective timing out.
Tensors move by collectives: DDP's gradient all-reduce in each inner step (each rank trains on its
share of the node's batch), and broadcasts from rank 0 of the weights after each outer step (and of
the AdamW state after a resume), so every local rank holds rank 0's bits.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist
from pydantic import BaseModel, Field
from torch._C._distributed_c10d import Store

from mlnode.common.errors import InvalidRequest
from mlnode.train.inner import InnerLoop
from mlnode.train.schemas import OptimConfig, TrainRequest

HOST = "127.0.0.1"
READY_KEY = "ready/{}"
COMMAND_KEY = "command/{}"
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class FollowerSpec(BaseModel):
    """What a follower reads on stdin."""

    request: TrainRequest = Field(description="The node's training request.")
    local_rank: int = Field(ge=1, description="This follower's local rank.")
    devices: list[str] = Field(description="Device of every local rank, rank 0 first.")
    port: int = Field(description="Port of rank 0's TCPStore on 127.0.0.1.")
    timeout_s: float = Field(gt=0, description="Collective timeout of the process group.")
    torch_threads: int | None = Field(None, description="CPU threads torch may use.")
    parent_pid: int = Field(description="The node process; the follower exits when it is gone.")


class Command(BaseModel):
    """One order of rank 0 to its followers."""

    cmd: Literal["step", "sync", "check", "stop"] = Field(description="What to do.")
    step: int = Field(0, description="With `step`: the inner step to run.")
    optimizer: bool = Field(False, description="With `sync`: the AdamW state comes too.")


def local_optim(optim: OptimConfig, world: int) -> OptimConfig:
    """One local rank's share of the inner batch; micro batches never grow."""
    if world == 1:
        return optim
    if optim.batch_size % world:
        raise InvalidRequest(
            f"optim.batch_size {optim.batch_size} must be a multiple of the {world} local devices",
            param="optim.batch_size",
        )
    share = optim.batch_size // world
    micro = math.gcd(optim.micro_batch_size or optim.batch_size, share)
    return optim.model_copy(update={"batch_size": share, "micro_batch_size": micro})


def join_group(store: Store, rank: int, devices: list[torch.device], timeout_s: float) -> None:
    """Form the default process group of the local ranks."""
    device = devices[rank]
    cuda = device.type == "cuda"
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        store=store,
        rank=rank,
        world_size=len(devices),
        timeout=timedelta(seconds=timeout_s),
        device_id=device if cuda else None,
    )


def local_step(inner: InnerLoop, batch: torch.Tensor, step: int, rank: int, world: int) -> float:
    """Inner step `step` on this rank's share of the node's batch; returns the node's mean loss."""
    inner.step = step
    loss = inner.train_step(torch.tensor_split(batch, world)[rank])
    total = torch.tensor([loss], dtype=torch.float32, device=inner.device)
    dist.all_reduce(total)
    return float(total) / world


@torch.no_grad()
def sync_state(inner: InnerLoop, optimizer: bool) -> None:
    """Every rank takes rank 0's weights (and AdamW state) and inner step count."""
    step = torch.tensor([inner.step], dtype=torch.int64, device=inner.device)
    dist.broadcast(step, 0)
    inner.step = int(step)
    for param in inner.params.values():
        dist.broadcast(param.data, 0)
    if optimizer:
        _sync_adam(inner)


def _sync_adam(inner: InnerLoop) -> None:
    state = inner.optimizer.state
    for param in inner.params.values():
        own = state.get(param, {})
        moments = {k: own[k] if k in own else torch.zeros_like(param) for k in ADAM_MOMENTS}
        count = torch.tensor([float(own.get("step", 0.0))], device=inner.device)
        for tensor in (*moments.values(), count):
            dist.broadcast(tensor, 0)
        state[param] = {"step": count.reshape(()).cpu(), **moments}


def has_adam_state(inner: InnerLoop) -> bool:
    """Whether every parameter has AdamW moments (false before the first step)."""
    return all(p in inner.optimizer.state for p in inner.params.values())


def weights_agree(inner: InnerLoop, world: int) -> bool:
    """Gather a checksum of every rank's weights (bit patterns summed); True when all are equal."""
    sums = torch.stack(
        [
            p.detach().reshape(-1).view(_INT_VIEW[p.element_size()]).to(torch.int64).sum()
            for p in inner.params.values()
        ]
    )
    gathered = [torch.empty_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])
