"""Fusion transfers learning: copies of one tiny model, fine-tuned on disjoint shards of a task,
fused with fedavg, score better on the held-out union than each copy alone.

Run `pytest -s -k transfer` to see the numbers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mlnode.fuse.executor import FusionProgress
from mlnode.fuse.job import prepare, run
from mlnode.fuse.schemas import FuseRequest
from mlnode.fuse.testing import write_checkpoint

CLASSES, DIM = 8, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_task(seed: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around fixed class centres: `per_class` points of each class."""
    centres = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(0)) * 0.9
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    points = centres[labels] + torch.randn(len(labels), DIM, generator=generator)
    return points, labels


def tiny_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(y), (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def test_fedavg_of_shard_fine_tunes_beats_each_copy(tmp_path: Path) -> None:
    x, y = make_task(seed=1, per_class=200)
    held_x, held_y = make_task(seed=2, per_class=100)
    pre = tiny_model()
    warm = torch.arange(len(y)) % 100 == 0  # a little of everything: the shared starting point
    train(pre, x[warm], y[warm], steps=20, seed=0)
    shards = [y < CLASSES // 2, y >= CLASSES // 2]  # disjoint label halves
    sources = []
    for i, shard in enumerate(shards):
        copy = tiny_model()
        copy.load_state_dict(pre.state_dict())
        train(copy, x[shard], y[shard], steps=200, seed=i + 1)
        state = {k: v.detach().clone() for k, v in copy.state_dict().items()}
        path = write_checkpoint(tmp_path / f"copy{i}", state)
        sources.append({"path": str(path), "weight": float(shard.sum())})
    request = FuseRequest.model_validate(
        {
            "task_id": "demo",
            "method": "fedavg",
            "sources": sources,
            "output": {"path": str(tmp_path / "fused")},
        }
    )
    run(prepare(request, None), FusionProgress(), threading.Event())
    fused = tiny_model()
    fused.load_state_dict(load_file(str(tmp_path / "fused" / "model.safetensors")))

    scores: dict[str, float] = {"pretrained": accuracy(pre, held_x, held_y)}
    for i in range(len(shards)):
        copy = tiny_model()
        copy.load_state_dict(load_file(f"{sources[i]['path']}/model.safetensors"))
        scores[f"copy {i} (classes {'0-3' if i == 0 else '4-7'})"] = accuracy(copy, held_x, held_y)
    scores["fedavg fused"] = accuracy(fused, held_x, held_y)
    union = tiny_model()
    union.load_state_dict(pre.state_dict())
    train(union, x, y, steps=200, seed=5)
    scores["(trained on union)"] = accuracy(union, held_x, held_y)
    print("\nheld-out accuracy on the union of the shards:")
    for name, score in scores.items():
        print(f"  {name:<22} {score:.3f}")
    copies = [v for k, v in scores.items() if k.startswith("copy")]
    assert scores["fedavg fused"] > max(copies) + 0.2
    assert scores["fedavg fused"] > scores["pretrained"] + 0.2
