"""CUDA tensors are staged through host memory on send and arrive as CPU tensors."""

import pytest
import torch

from mlnode.common.transport.codec import TensorBuffer, encode, iter_chunks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
def test_cuda_tensor_round_trips_through_host(dtype: torch.dtype) -> None:
    source = torch.arange(1000, device="cuda").reshape(10, 100).t().to(dtype)  # non-contiguous
    encoded = encode("x", source)
    buffer = TensorBuffer(encoded.dtype, encoded.shape, encoded.nbytes)
    for piece in iter_chunks(encoded.payload, 4096):
        buffer.write(piece.tobytes())
    out = buffer.finish()
    assert out.device.type == "cpu" and out.dtype == dtype
    assert torch.equal(out, source.cpu())
