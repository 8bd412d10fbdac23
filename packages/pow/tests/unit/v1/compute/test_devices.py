"""GPU grouping by memory and batch-size fitting (pure; no GPU needed)."""

from __future__ import annotations

from mlnode.pow.v1.compute.devices import (
    Gpu,
    activation_bytes_per_nonce,
    cpu_matmul_type,
    fit_batch_size,
    group_gpus,
    plan_groups,
)
from mlnode.pow.v1.compute.params import ModelParams

GIB = 1 << 30
PARAMS = ModelParams(1024, 32, 32, 32, 8196, 10.0, 2048, 1e-5, 10000.0, False, 128)


def test_big_gpus_hold_a_copy_each_small_ones_pool() -> None:
    gpus = [Gpu(0, 80 * GIB), Gpu(1, 24 * GIB), Gpu(2, 80 * GIB), Gpu(3, 24 * GIB), Gpu(4, 4 * GIB)]
    groups = group_gpus(gpus, PARAMS.parameter_bytes())
    assert [[g.index for g in group] for group in groups] == [[0], [2], [1], [3]]


def test_gpus_pool_memory_when_one_is_too_small() -> None:
    gpus = [Gpu(i, 4 * GIB) for i in range(4)]
    groups = group_gpus(gpus, PARAMS.parameter_bytes())
    assert [[g.index for g in group] for group in groups] == [[0, 1, 2]]
    assert all(len({g.index for g in group}) == len(group) for group in groups)


def test_no_group_when_memory_is_short() -> None:
    assert group_gpus([Gpu(0, 2 * GIB)], PARAMS.parameter_bytes()) == []


def test_batch_size_is_lowered_to_fit() -> None:
    per_nonce = activation_bytes_per_nonce(PARAMS)
    assert fit_batch_size(100, PARAMS, 10 * per_nonce) == 9
    assert fit_batch_size(4, PARAMS, 10 * per_nonce) == 4
    assert fit_batch_size(100, PARAMS, 0) == 1


def test_cpu_plan() -> None:
    assert plan_groups("cpu", PARAMS) == [["cpu"]]


def test_f32_cpu_weights_only_when_they_fit() -> None:
    f32_bytes = 4 * PARAMS.total_parameters()
    assert cpu_matmul_type("f32", PARAMS, 2 * f32_bytes) == "f32"
    assert cpu_matmul_type("f32", PARAMS, f32_bytes) == "f16"
    assert cpu_matmul_type("f16", PARAMS, 10 * f32_bytes) == "f16"
