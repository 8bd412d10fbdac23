"""Whole fusions, local and pulled from fake peers: results, dtypes, filters and failures."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mlnode.common.testing import TransportHub
from mlnode.fuse.executor import FusionProgress, FusionStopped, NonFiniteTensor, is_finite
from mlnode.fuse.io.local import LocalSafetensors
from mlnode.fuse.io.peer import SharedModel
from mlnode.fuse.job import prepare, run
from mlnode.fuse.plan import IncompatibleModels
from mlnode.fuse.schemas import FuseRequest
from mlnode.fuse.testing import random_model, write_checkpoint

SHAPES = {"embed.weight": (32, 8), "layer.0.weight": (8, 8), "layer.0.bias": (8,)}


def request(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> FuseRequest:
    body = {
        "task_id": "task-1",
        "method": "linear",
        "sources": sources,
        "output": {"path": str(tmp_path / "out"), "max_shard_size": 600},
        **extra,
    }
    return FuseRequest.model_validate(body)


def fuse(req: FuseRequest, transport: Any = None) -> dict[str, torch.Tensor]:
    out = run(prepare(req, transport), FusionProgress(), threading.Event())
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    a = write_checkpoint(tmp_path / "a", random_model(1, SHAPES), shards=2, config={"x": 1})
    b = write_checkpoint(tmp_path / "b", random_model(2, SHAPES))
    return a, b


def test_linear_fusion_of_two_checkpoints(tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    a, b = two_models
    req = request(tmp_path, [{"path": str(a), "weight": 1}, {"path": str(b), "weight": 3}])
    fused = fuse(req)
    ma, mb = random_model(1, SHAPES), random_model(2, SHAPES)
    assert set(fused) == set(SHAPES)
    for name in SHAPES:
        assert torch.allclose(fused[name], (ma[name] + 3 * mb[name]) / 4)
    assert (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()


def test_output_dtype_and_keep_base(tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    a, b = two_models
    base = write_checkpoint(tmp_path / "base", random_model(3, SHAPES, torch.bfloat16))
    req = request(
        tmp_path,
        [{"path": str(a)}, {"path": str(b)}],
        method="task_arithmetic",
        base={"path": str(base)},
        keep_base=["embed.*"],
        output={"path": str(tmp_path / "out"), "dtype": "float16"},
    )
    fused = fuse(req)
    assert all(t.dtype == torch.float16 for t in fused.values())
    base_embed = random_model(3, SHAPES, torch.bfloat16)["embed.weight"]
    assert torch.equal(fused["embed.weight"], base_embed.to(torch.float16))


def test_integer_tensors_are_copied_from_the_reference(tmp_path: Path) -> None:
    a = write_checkpoint(tmp_path / "a", {"w": torch.ones(2), "step": torch.tensor([7])})
    b = write_checkpoint(tmp_path / "b", {"w": torch.zeros(2), "step": torch.tensor([9])})
    fused = fuse(request(tmp_path, [{"path": str(a)}, {"path": str(b)}]))
    assert torch.equal(fused["step"], torch.tensor([7]))
    assert torch.equal(fused["w"], torch.full((2,), 0.5))


def test_differing_names_and_shapes_are_listed(tmp_path: Path) -> None:
    a = write_checkpoint(tmp_path / "a", {"w": torch.ones(2, 3), "only_a": torch.ones(1)})
    b = write_checkpoint(tmp_path / "b", {"w": torch.ones(3, 2), "only_b": torch.ones(1)})
    with pytest.raises(IncompatibleModels) as info:
        prepare(request(tmp_path, [{"path": str(a)}, {"path": str(b)}]), None)
    message = str(info.value)
    assert "only_a missing from" in message and "only_b only in" in message
    assert "w: shape [2, 3]" in message and "[3, 2]" in message


def test_nan_names_the_tensor_and_leaves_no_output(tmp_path: Path) -> None:
    bad = random_model(2, SHAPES)
    bad["layer.0.bias"][3] = float("nan")
    a = write_checkpoint(tmp_path / "a", random_model(1, SHAPES))
    b = write_checkpoint(tmp_path / "b", bad)
    with pytest.raises(NonFiniteTensor, match=r"layer\.0\.bias of .*b holds NaN or inf"):
        fuse(request(tmp_path, [{"path": str(a)}, {"path": str(b)}]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_stopped_fusion_leaves_no_output(tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    a, b = two_models
    stop = threading.Event()
    stop.set()
    prepared = prepare(request(tmp_path, [{"path": str(a)}, {"path": str(b)}]), None)
    with pytest.raises(FusionStopped):
        run(prepared, FusionProgress(), stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_fusion_from_peers_equals_local_fusion_bit_for_bit(
    tmp_path: Path, two_models: tuple[Path, Path], network: TransportHub
) -> None:
    a, b = two_models
    fuser, peer_a, peer_b = network.node("f"), network.node("pa"), network.node("pb")
    for node, path in ((peer_a, a), (peer_b, b)):
        node.known.add("f")
        fuser.known.add(node.peer_id)
        node.serve("task-1", SharedModel(LocalSafetensors(path)))
    ties = {"method": "ties", "params": {"density": 0.5}, "base": {"path": str(a)}}
    remote = request(tmp_path, [{"peer_id": "pa"}, {"peer_id": "pb"}], **ties)
    remote_out = fuse(remote, fuser)
    assert sum(len(names) for _, _, names in fuser.fetched) == 2 * len(SHAPES)
    local = request(tmp_path / "local", [{"path": str(a)}, {"path": str(b)}], **ties)
    local_out = fuse(local)
    assert all(torch.equal(remote_out[n], local_out[n]) for n in SHAPES)


def test_unknown_peer_cannot_pull(
    tmp_path: Path, two_models: tuple[Path, Path], network: TransportHub
) -> None:
    stranger, owner = network.node("s"), network.node("o")
    owner.serve("task-1", SharedModel(LocalSafetensors(two_models[0])))
    stranger.known.add("o")
    with pytest.raises(Exception, match="does not know s"):
        prepare(request(tmp_path, [{"peer_id": "o"}]), stranger)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn]
)
def test_finite_check_finds_nan_and_inf_in_every_float_dtype(dtype: torch.dtype) -> None:
    assert is_finite(torch.ones(5).to(dtype))
    assert is_finite(torch.empty(0, dtype=dtype))
    assert not is_finite(torch.tensor([1.0, float("nan")]).to(dtype))
    if dtype != torch.float8_e4m3fn:  # e4m3fn has no inf: it saturates to NaN
        assert not is_finite(torch.tensor([float("-inf"), 1.0]).to(dtype))
