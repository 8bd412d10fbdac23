"""Schema v1's GPU families read through NVML on a real device."""

import pytest
import torch

from mlnode.api.federation.hardware import GpuReader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_every_gpu_reports_memory_and_a_clock() -> None:
    reader = GpuReader()
    try:
        snapshot = reader.read()
    finally:
        reader.close()
    assert snapshot.at is not None
    by_family: dict[str, list[dict[str, str]]] = {}
    for family, labels, value in snapshot.samples:
        assert value >= 0
        by_family.setdefault(family, []).append(labels)
    used = by_family["mlnode_gpu_memory_used_bytes"]
    assert sorted(int(labels["gpu_index"]) for labels in used) == list(
        range(torch.cuda.device_count())
    )
    assert all(labels["gpu_model"] for labels in used)
    assert "mlnode_gpu_memory_free_bytes" in by_family
    assert "mlnode_gpu_sm_clock_max_hertz" in by_family
    assert "utilization" not in " ".join(by_family)
