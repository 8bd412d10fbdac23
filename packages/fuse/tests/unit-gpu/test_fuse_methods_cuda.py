"""Merge methods are device-agnostic: on CUDA tensors they match the CPU result."""

from __future__ import annotations

import pytest
import torch

from mlnode.fuse.methods.base import MergeInputs
from mlnode.fuse.methods.registry import get_method
from mlnode.fuse.methods.validate import resolve

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    ("method", "params"),
    [("linear", {}), ("slerp", {"t": 0.3}), ("median", {}), ("trimmed_mean", {"trim_ratio": 0.0})],
)
def test_cuda_merge_matches_cpu(method: str, params: dict[str, float]) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(256, 64, generator=generator) for _ in range(2)]
    m = get_method(method)
    resolved = resolve(m, params, [None, None], has_base=False)
    cpu = m.merge(MergeInputs(tensors, None, resolved.params, resolved.tensor_params, name="w"))
    cuda = [t.cuda() for t in tensors]
    gpu = m.merge(MergeInputs(cuda, None, resolved.params, resolved.tensor_params, name="w"))
    assert gpu.is_cuda
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
