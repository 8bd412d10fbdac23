"""Local ranks on GPUs over nccl: two GPUs train as one node; the collectives on one GPU."""

import os
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import torch.distributed as dist
from fastapi.testclient import TestClient
from torch._C._distributed_c10d import TCPStore

from mlnode.api.app import create_app
from mlnode.api.testing import make_settings
from mlnode.common.testing import TransportHub, not_none, wait_until
from mlnode.train.inner import InnerLoop
from mlnode.train.local import join_group, local_step, sync_state, weights_agree
from mlnode.train.model import build_model
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import ModelSpec, OptimConfig, TrainJobProgress, TrainRequest
from mlnode.train.testing import follower_hashes
from mlnode.train.trainer import DilocoTrainer, TrainerEnv

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
needs_one = pytest.mark.skipif(GPUS < 1, reason="needs a CUDA GPU")
needs_two = pytest.mark.skipif(GPUS < 2, reason=f"needs 2 CUDA GPUs, {GPUS} visible")


def run_trainer(
    make_request: Callable[..., dict[str, Any]], ckpt: Path, gpus: int
) -> tuple[DilocoTrainer, TrainJobProgress]:
    request = TrainRequest.model_validate(make_request())
    progress = TrainProgress(request.task_id, 0, 1)
    devices = tuple(torch.device("cuda", i) for i in range(gpus))
    trainer = DilocoTrainer.build(
        request,
        TrainerEnv(TransportHub().node("w0"), devices[0], ckpt, local_devices=devices),
        progress,
    )
    trainer.run(threading.Event())
    return trainer, progress.snapshot()


@needs_two
def test_two_gpus_train_as_one_node(make_request: Any, tmp_path: Path) -> None:
    _, single = run_trainer(make_request, tmp_path / "one", 1)

    _, status = run_trainer(make_request, tmp_path / "two", 2)

    history = status.loss_history
    assert len(history) == 4 and not_none(history[-1].loss) < not_none(history[0].loss) - 1.0
    # bf16 autocast: the same samples give nearly the same losses, not the same bits.
    final, reference = history[-1].eval_loss, single.loss_history[-1].eval_loss
    assert final == pytest.approx(reference, rel=5e-2)
    assert status.local_weights_agree is True
    assert [r.device for r in status.local_ranks] == ["cuda:0", "cuda:1"]
    assert follower_hashes(tmp_path / "two") == {1: status.weights_sha256}


@needs_two
def test_a_killed_gpu_follower_fails_the_job(make_request: Any, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, train={"device": "cuda", "local_devices": "2", "join_timeout_s": 0.5}
    )
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/train/start", json=make_request(optim={"total_steps": 100000}))
        body = wait_for(
            client, lambda b: b["phase"] != "RUNNING" or b["progress"]["inner_step"] >= 2
        )
        pid = body["progress"]["local_ranks"][1]["pid"]

        os.kill(pid, signal.SIGKILL)

        body = wait_for(client, lambda b: b["phase"] != "RUNNING")
        assert body["phase"] == "FAILED"
        assert f"local rank 1 (pid {pid}, cuda:1) exited" in body["last_error"]
    assert not psutil.pid_exists(pid)


def wait_for(client: TestClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get("/api/v1/train/status").json(), check, timeout_s=90, interval_s=0.05
    )
    return body


@needs_one
def test_the_local_collectives_run_over_nccl(tmp_path: Path) -> None:
    """One rank is enough to run every collective the local ranks use on CUDA tensors."""
    device = torch.device("cuda", 0)
    store = TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timedelta(seconds=60))
    join_group(store, 0, [device], 60.0)
    try:
        config = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                  "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64}  # fmt: skip
        inner = InnerLoop(build_model(ModelSpec(config=config), 0), OptimConfig(), device)
        batch = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(0))

        loss = local_step(inner, batch, 0, 0, 1)
        sync_state(inner, optimizer=True)

        assert loss > 0 and inner.step == 1
        assert float(inner.optimizer.state[next(iter(inner.params.values()))]["step"]) == 1.0
        assert weights_agree(inner, 1)
    finally:
        dist.destroy_process_group()
