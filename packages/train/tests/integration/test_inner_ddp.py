"""The inner loop under torch.distributed: two CPU processes (gloo) stand in for two local GPUs."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch._C._distributed_c10d import TCPStore

from mlnode.common.testing import WaitTimeout, wait_until
from mlnode.train.inner import InnerLoop
from mlnode.train.model import build_model
from mlnode.train.schemas import ModelSpec

RANK_SCRIPT = Path(__file__).with_name("ddp_rank.py")
#: Ranks still running after this long are stuck (each dumps its stacks after 150 s).
RANKS_LIMIT_S = 180


def test_two_local_processes_step_like_one_on_the_whole_batch(tmp_path: Path) -> None:
    shared = runpy.run_path(str(RANK_SCRIPT))  # by path, as the ranks run it
    # The test hosts the store the way a node's rank 0 does: bound to a free port at once, so
    # no other process can take the port between choosing and binding it.
    store = TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False)
    ranks = [
        subprocess.Popen(
            [sys.executable, str(RANK_SCRIPT), str(rank), str(tmp_path), str(store.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for rank in range(2)
    ]
    try:
        # A rank that fails ends the wait at once: the other would wait for it in vain.
        wait_until(
            lambda: [r.poll() for r in ranks],
            lambda codes: all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes),
            timeout_s=RANKS_LIMIT_S,
            interval_s=0.2,
            what="both ranks to finish",
        )
    except WaitTimeout:
        pass
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    outputs = [r.communicate()[0].decode(errors="replace") for r in ranks]
    if any(r.returncode != 0 for r in ranks):
        pytest.fail(
            "a rank failed:\n" + "\n".join(f"--- rank {i}\n{o}" for i, o in enumerate(outputs))
        )

    single = InnerLoop(
        build_model(ModelSpec(config=shared["TINY"]), 0),
        shared["OPTIM"].model_copy(update={"batch_size": 8}),
        torch.device("cpu"),
    )
    single.train_step(shared["batch"]())
    weights = [load_file(str(tmp_path / f"rank{r}.st")) for r in range(2)]
    for name, weight in single.weights().items():
        assert torch.equal(weights[0][name], weights[1][name]), name
        assert torch.allclose(weights[0][name], weight, atol=1e-5), name
