"""Three real MLNodes: two share checkpoints, the third fuses them by pulling over the transport.

The pulled fusion must equal, byte for byte, the same fusion of the same files done locally, and
a node whose key the holder does not know must not get a tensor.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from mlnode.common.testing import wait_until
from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.fuse.executor import FusionProgress
from mlnode.fuse.job import prepare, run
from mlnode.fuse.schemas import FuseRequest
from mlnode.fuse.testing import random_model, write_checkpoint

TASK = "fuse-task"
# One tensor spans several 4 MiB transport chunks; the small ones share frames.
SHAPES = {"embed.weight": (1024, 1536), "layer.0.weight": (64, 64), "layer.0.bias": (64,)}


def start_node(state_dir: Path, attempts: int = 3) -> MLNodeProcess:
    """A started node; fresh ports if another process took a free port meanwhile."""
    for attempt in range(attempts):
        node = MLNodeProcess(state_dir / str(attempt), {"MLNODE_GRPC_HOST": "127.0.0.1"})
        try:
            return node.start()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def stop_started(future: Future[MLNodeProcess]) -> None:
    if future.exception() is None:
        future.result().terminate()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MLNodeProcess]]:
    root = tmp_path_factory.mktemp("nodes")
    names = ("holder-a", "holder-b", "fuser")
    with ExitStack() as stack, ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(start_node, root / name) for name in names}
        for future in futures.values():
            stack.callback(stop_started, future)
        yield {name: future.result() for name, future in futures.items()}


def api(node: MLNodeProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{node.url}/api/v1{path}", timeout=60, **kwargs)


def key(node: MLNodeProcess) -> str:
    public_key: str = api(node, "GET", "/identity").json()["public_key"]
    return public_key


def know(node: MLNodeProcess, peer_id: str, peer: MLNodeProcess, address: bool) -> None:
    body = {"public_key": key(peer), "tasks": [TASK]}
    if address:
        body["address"] = peer.grpc_address
    response = api(node, "PUT", f"/peers/{peer_id}", json=body)
    assert response.status_code == 200, response.text


def fuse_body(sources: list[dict[str, Any]], base: Path, output: Path) -> dict[str, Any]:
    return {
        "task_id": TASK,
        "method": "ties",
        "params": {"density": 0.6, "lambda": 0.9},
        "base": {"path": str(base)},
        "sources": sources,
        "output": {"path": str(output), "dtype": "bfloat16", "max_shard_size": "2MB"},
    }


def wait_done(node: MLNodeProcess) -> dict[str, Any]:
    status: dict[str, Any] = wait_until(
        lambda: api(node, "GET", "/fuse/status").json(),
        lambda s: s["phase"] not in ("STARTING", "RUNNING", "STOPPING"),
        timeout_s=120,
        interval_s=0.1,
        what="fusion to end",
    )
    return status


def test_pulled_fusion_equals_local_fusion_and_strangers_cannot_pull(
    nodes: dict[str, MLNodeProcess], tmp_path: Path
) -> None:
    a, b, fuser = nodes["holder-a"], nodes["holder-b"], nodes["fuser"]
    base = write_checkpoint(tmp_path / "base", random_model(0, SHAPES), config={"m": "tiny"})
    ckpt_a = write_checkpoint(tmp_path / "a", random_model(1, SHAPES), shards=2)
    ckpt_b = write_checkpoint(tmp_path / "b", random_model(2, SHAPES, torch.bfloat16))
    for holder, ckpt in ((a, ckpt_a), (b, ckpt_b)):
        know(holder, "fuser", fuser, address=False)
        shared = api(holder, "POST", "/fuse/share", json={"task_id": TASK, "path": str(ckpt)})
        assert shared.status_code == 200, shared.text
    know(fuser, "holder-a", a, address=True)
    know(fuser, "holder-b", b, address=True)

    sources = [{"peer_id": "holder-a", "weight": 1.0}, {"peer_id": "holder-b", "weight": 2.0}]
    pulled = tmp_path / "pulled"
    started = api(fuser, "POST", "/fuse/start", json=fuse_body(sources, base, pulled))
    assert started.status_code == 202, started.text
    status = wait_done(fuser)
    assert status["phase"] == "FINISHED", status

    local_sources = [{"path": str(ckpt_a), "weight": 1.0}, {"path": str(ckpt_b), "weight": 2.0}]
    local = tmp_path / "local"
    request = FuseRequest.model_validate(fuse_body(local_sources, base, local))
    run(prepare(request, None), FusionProgress(), threading.Event())
    pulled_files = sorted(p.name for p in pulled.iterdir())
    assert pulled_files == sorted(p.name for p in local.iterdir())
    assert "model.safetensors.index.json" in pulled_files and "config.json" in pulled_files
    for name in pulled_files:
        assert (pulled / name).read_bytes() == (local / name).read_bytes(), name

    # Only what a holder was told to share, for that task, can be pulled.
    other_task = {**fuse_body(sources, base, tmp_path / "y"), "task_id": "other-task"}
    assert api(fuser, "POST", "/fuse/start", json=other_task).status_code in (403, 404)
    assert api(a, "DELETE", f"/fuse/share/{TASK}").status_code == 200
    unshared = api(fuser, "POST", "/fuse/start", json=fuse_body(sources, base, tmp_path / "z"))
    assert unshared.status_code == 404, unshared.text

    # holder-b knows holder-a's address, but holder-a does not know holder-b's key.
    know(b, "holder-a", a, address=True)
    refused = api(b, "POST", "/fuse/start", json=fuse_body(sources[:1], base, tmp_path / "x"))
    assert refused.status_code == 403, refused.text
    assert not (tmp_path / "x").exists()
