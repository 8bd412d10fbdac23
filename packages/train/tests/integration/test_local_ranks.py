"""Two local ranks of one node: rank 0 in this process, a real follower subprocess, gloo on CPU."""

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from fastapi.testclient import TestClient

from mlnode.api.app import create_app
from mlnode.api.testing import make_settings
from mlnode.common.testing import TransportHub, not_none, wait_until
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.testing import follower_hashes
from mlnode.train.trainer import DilocoTrainer, TrainerEnv

CPU = torch.device("cpu")


def make_trainer(
    make_request: Callable[..., dict[str, Any]], ckpt: Path, ranks: int, **overrides: Any
) -> tuple[DilocoTrainer, TrainProgress]:
    request = TrainRequest.model_validate(make_request(**overrides))
    progress = TrainProgress(request.task_id, 0, 1)
    env = TrainerEnv(
        TransportHub().node("w0"), CPU, ckpt, local_devices=(CPU,) * ranks, torch_threads=1
    )
    return DilocoTrainer.build(request, env, progress), progress


def hashes(progress: TrainProgress) -> dict[int, str]:
    return {h.outer_round: h.sha256 for h in progress.snapshot().weights_history}


def follower_pids() -> list[int]:
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "mlnode.train.follower" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def gone(process: psutil.Process) -> bool:
    """Exited (an orphan's zombie counts: reaping it is init's business)."""
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_two_local_ranks_train_like_one_process(make_request, tmp_path) -> None:
    single, single_progress = make_trainer(make_request, tmp_path / "one", 1)
    single.run(threading.Event())
    double, progress = make_trainer(make_request, tmp_path / "two", 2)

    double.run(threading.Event())

    status = progress.snapshot()
    history, reference = status.loss_history, single_progress.snapshot().loss_history
    assert len(history) == 4 and not_none(history[-1].loss) < not_none(history[0].loss) - 1.0
    for mine, theirs in zip(history, reference, strict=True):
        assert mine.loss == pytest.approx(theirs.loss, rel=1e-4)
        assert mine.eval_loss == pytest.approx(theirs.eval_loss, rel=1e-4)
    for name, weight in single.inner.weights().items():
        assert torch.allclose(double.inner.weights()[name], weight, atol=1e-5), name
    assert status.local_weights_agree is True
    assert [r.local_rank for r in status.local_ranks] == [0, 1]
    assert follower_hashes(tmp_path / "two") == {1: status.weights_sha256}
    assert not psutil.pid_exists(status.local_ranks[1].pid)
    assert single_progress.snapshot().local_ranks == []  # alone: no follower, no group


def test_a_resumed_node_gives_its_followers_the_optimizer_state(make_request, tmp_path) -> None:
    optim = {"lr": 3e-3, "total_steps": 40, "batch_size": 8, "micro_batch_size": 2}
    straight, straight_progress = make_trainer(make_request, tmp_path / "a", 2, optim=optim)
    straight.run(threading.Event())
    first, progress = make_trainer(make_request, tmp_path / "b", 2, optim=optim)
    stop = threading.Event()
    watcher = threading.Thread(target=stop_at_round, args=(progress, 2, stop), daemon=True)
    watcher.start()
    first.run(stop)
    stopped_at = progress.snapshot().outer_round
    assert 2 <= stopped_at < 8

    second, resumed = make_trainer(make_request, tmp_path / "b", 2, optim=optim)
    second.run(threading.Event())

    status = resumed.snapshot()
    assert status.resumed_from == stopped_at
    # A follower with fresh AdamW moments would step differently and skew the averaged gradients.
    assert status.local_weights_agree is True
    assert hashes(resumed)[8] == hashes(straight_progress)[8]
    assert follower_hashes(tmp_path / "b") == {1: hashes(resumed)[8]}


def stop_at_round(progress: TrainProgress, round_index: int, stop: threading.Event) -> None:
    try:
        wait_until(
            lambda: progress.snapshot().outer_round >= round_index,
            timeout_s=60,
            interval_s=0.005,
            what=f"round {round_index}",
        )
    finally:
        stop.set()


def test_one_local_rank_is_the_plain_path(make_request, tmp_path) -> None:
    trainer, _ = make_trainer(make_request, tmp_path / "c", 1)

    assert trainer.local is None and trainer.inner.forward_model is trainer.inner.model
    assert trainer.inner.config is trainer.req.optim


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        train={"device": "cpu", "local_devices": "2", "torch_threads": 1, "join_timeout_s": 0.5},
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait_for(client: TestClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get("/api/v1/train/status").json(), check, timeout_s=60, interval_s=0.05
    )
    return body


def running_follower(client: TestClient) -> int:
    body = wait_for(
        client,
        lambda b: b["phase"] != "RUNNING" or b["progress"]["inner_step"] >= 2,
    )
    assert body["phase"] == "RUNNING", body["last_error"]
    pid = body["progress"]["local_ranks"][1]["pid"]
    assert psutil.pid_exists(pid)
    return int(pid)


def test_stop_kills_the_follower(client, make_request) -> None:
    client.post("/api/v1/train/start", json=make_request(optim={"total_steps": 100000}))
    pid = running_follower(client)

    body = client.post("/api/v1/train/stop").json()

    assert body["phase"] == "STOPPED"
    assert not psutil.pid_exists(pid) and follower_pids() == []


def test_a_stop_while_the_follower_starts_kills_it_at_once(client, make_request) -> None:
    client.post("/api/v1/train/start", json=make_request(optim={"total_steps": 100000}))
    (pid,) = wait_until(follower_pids, timeout_s=10, interval_s=0.01, what="a follower")
    started = time.monotonic()

    body = client.post("/api/v1/train/stop").json()

    assert body["phase"] == "STOPPED" and time.monotonic() - started < 5
    assert body["progress"]["local_ranks"] == []  # it never joined
    assert not psutil.pid_exists(pid) and follower_pids() == []


def test_a_killed_follower_fails_the_job_and_a_new_job_starts(client, make_request) -> None:
    client.post("/api/v1/train/start", json=make_request(optim={"total_steps": 100000}))
    pid = running_follower(client)

    os.kill(pid, signal.SIGKILL)

    body = wait_for(client, lambda b: b["phase"] != "RUNNING")
    assert body["phase"] == "FAILED"
    assert f"local rank 1 (pid {pid}, cpu) exited with code -9" in body["last_error"]
    assert follower_pids() == []
    # The process group of the failed job is gone: the next job forms a new one.
    assert client.post("/api/v1/train/start", json=make_request()).status_code == 200
    body = wait_for(client, lambda b: b["phase"] != "RUNNING")
    assert body["phase"] == "FINISHED", body["last_error"]
    assert body["progress"]["local_weights_agree"] is True


def test_a_batch_the_local_ranks_cannot_share_is_refused(client, make_request) -> None:
    body = make_request(optim={"batch_size": 7})

    response = client.post("/api/v1/train/start", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["param"] == "optim.batch_size"
    assert follower_pids() == []


def test_shutdown_kills_the_follower(tmp_path, make_request) -> None:
    settings = make_settings(
        tmp_path, train={"device": "cpu", "local_devices": "2", "torch_threads": 1}
    )
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/train/start", json=make_request(optim={"total_steps": 100000}))
        pid = running_follower(client)

    assert not psutil.pid_exists(pid) and follower_pids() == []


NODE_SCRIPT = """
import sys, threading, torch
from pathlib import Path
from mlnode.common.testing import TransportHub
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainRequest
from mlnode.train.trainer import DilocoTrainer, TrainerEnv
torch.set_num_threads(1)
request = TrainRequest.model_validate_json(Path(sys.argv[1]).read_text())
cpu = torch.device("cpu")
env = TrainerEnv(TransportHub().node("w0"), cpu, Path(sys.argv[2]), local_devices=(cpu, cpu))
DilocoTrainer.build(request, env, TrainProgress("t", 0, 1)).run(threading.Event())
"""


def test_a_follower_does_not_outlive_a_killed_node(make_request, tmp_path) -> None:
    body = TrainRequest.model_validate(make_request(optim={"total_steps": 100000}))
    (tmp_path / "request.json").write_text(body.model_dump_json())
    node = psutil.Popen(
        [sys.executable, "-c", NODE_SCRIPT, str(tmp_path / "request.json"), str(tmp_path / "n")]
    )
    wait_until(
        lambda: "local rank 1 on cpu" in log_text(tmp_path / "n"),
        timeout_s=60,
        interval_s=0.1,
        what="the follower to start",
    )
    (follower,) = node.children()

    node.kill()
    node.wait()

    wait_until(lambda: gone(follower), timeout_s=10, interval_s=0.1, what="the orphaned follower")


def log_text(log_dir: Path) -> str:
    path = log_dir / "local-rank-1.log"
    return path.read_text() if path.exists() else ""
