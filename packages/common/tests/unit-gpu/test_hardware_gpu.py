import pytest
import torch

from mlnode.common.hardware import discover_gpus

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_discovered_gpus_match_the_driver() -> None:
    gpus = discover_gpus()
    assert len(gpus) == torch.cuda.device_count()
    for gpu in gpus:
        props = torch.cuda.get_device_properties(gpu.index)
        assert gpu.name == props.name and gpu.total_memory_bytes == props.total_memory > 0
