"""A follower local rank: `python -m mlnode.train.follower`, started by `mlnode.train.ranks`.

Reads a `FollowerSpec` as JSON on stdin, builds the same model and batches as local rank 0, joins
the local process group, then does what rank 0 posts until `stop`: an inner step on its share of
the node's batch, taking rank 0's weights (and AdamW state), or a weight checksum. It exits when
rank 0's process goes away, and logs the hash of its weights when it stops.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import TCPStore

from mlnode.train.data import TokenBatches, worker_data
from mlnode.train.diloco.math import weights_hash
from mlnode.train.inner import InnerLoop
from mlnode.train.local import (
    COMMAND_KEY,
    HOST,
    READY_KEY,
    Command,
    FollowerSpec,
    join_group,
    local_optim,
    local_step,
    sync_state,
    weights_agree,
)
from mlnode.train.model import build_model

log = logging.getLogger("mlnode.train.follower")

#: How long a follower waits for rank 0's next command: an outer round may take long, and a
#: vanished rank 0 ends the wait by closing the store's connection.
COMMAND_WAIT = timedelta(days=7)


def _watch_parent(parent_pid: int) -> None:
    """Exit when the node process is gone (nothing else may be left to stop this process)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        log.error("the node process %d is gone; exiting", parent_pid)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def follow(store: TCPStore, spec: FollowerSpec, inner: InnerLoop, batches: TokenBatches) -> None:
    """Carry out rank 0's commands until `stop`."""
    world, rank = len(spec.devices), spec.local_rank
    batch_size = spec.request.optim.batch_size
    seq = 0
    while True:
        command = Command.model_validate_json(store.get(COMMAND_KEY.format(seq)))
        seq += 1
        if command.cmd == "step":
            local_step(inner, batches.batch(command.step, batch_size), command.step, rank, world)
        elif command.cmd == "sync":
            sync_state(inner, command.optimizer)
        elif command.cmd == "check":
            weights_agree(inner, world)
        else:
            log.info(
                "local rank %d stops at inner step %d; weights sha256 %s",
                rank,
                inner.step,
                weights_hash(inner.weights()),
            )
            return


def run(spec: FollowerSpec) -> None:
    """Build, join and follow."""
    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    devices = [torch.device(d) for d in spec.devices]
    device = devices[spec.local_rank]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    request = spec.request
    model = build_model(request.model, request.seed)
    batches, _ = worker_data(request, model)
    inner = InnerLoop(model, local_optim(request.optim, len(devices)), device)
    store = TCPStore(HOST, spec.port, len(devices), is_master=False, timeout=COMMAND_WAIT)
    store.set(READY_KEY.format(spec.local_rank), "1")
    join_group(store, spec.local_rank, devices, spec.timeout_s)
    try:
        inner.distribute()
        follow(store, spec, inner, batches)
    finally:
        dist.destroy_process_group()


def main() -> int:
    """Entry point; the exit status says whether the follower stopped cleanly."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    spec = FollowerSpec.model_validate_json(sys.stdin.read())
    _watch_parent(spec.parent_pid)
    log.info(
        "local rank %d on %s, pid %d", spec.local_rank, spec.devices[spec.local_rank], os.getpid()
    )
    try:
        run(spec)
    except Exception:
        log.exception("local rank %d failed", spec.local_rank)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
