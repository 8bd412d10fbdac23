import numpy as np
import pytest
import torch

from mlnode.common.transport.codec import (
    DTYPES,
    CodecError,
    TensorBuffer,
    check_sendable,
    encode,
    iter_chunks,
    wire_dtype,
)

TORCH_DTYPES = [d.torch_dtype for d in DTYPES.values()]


def roundtrip(tensor: torch.Tensor | np.ndarray, chunk: int = 7) -> torch.Tensor:
    enc = encode("x", tensor)
    buf = TensorBuffer(enc.dtype, enc.shape, enc.nbytes)
    for piece in iter_chunks(enc.payload, chunk):
        buf.write(piece.tobytes())
    return buf.finish()


def sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype is torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, dtype=dtype)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (4, 3, 2)], ids=str)
def test_torch_round_trip_every_dtype_and_shape(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    tensor = sample(dtype, shape)
    out = roundtrip(tensor)
    assert out.dtype == dtype and out.shape == tensor.shape
    assert torch.equal(out, tensor)


@pytest.mark.parametrize("dtype", [d for d in DTYPES.values() if d.numpy_dtype is not None])
def test_numpy_round_trip(dtype) -> None:
    array = sample(dtype.torch_dtype, (3, 4)).numpy()
    out = roundtrip(array)
    assert out.dtype == dtype.torch_dtype
    np.testing.assert_array_equal(out.numpy(), array)


def test_bfloat16_is_bit_exact_including_nan_payloads() -> None:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    tensor = bits.view(torch.bfloat16)  # every 16-bit pattern: NaNs, infs, -0, subnormals
    out = roundtrip(tensor, chunk=4096)
    assert torch.equal(out.view(torch.int16), bits)


def test_non_contiguous_tensors_and_arrays() -> None:
    tensor = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()[::2]
    assert not tensor.is_contiguous()
    assert torch.equal(roundtrip(tensor), tensor)
    array = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::3]
    np.testing.assert_array_equal(roundtrip(array).numpy(), array)


def test_big_endian_numpy_is_sent_little_endian() -> None:
    array = np.arange(5, dtype=">i4")
    np.testing.assert_array_equal(roundtrip(array).numpy(), np.arange(5, dtype=np.int32))


@pytest.mark.parametrize(
    "tensor",
    [torch.zeros(2, dtype=torch.complex64), torch.zeros(2, dtype=torch.float64), np.zeros(2)],
    ids=["complex64", "float64", "numpy-float64"],
)
def test_unsupported_dtypes_are_refused(tensor: object) -> None:
    with pytest.raises(CodecError, match="cannot be sent"):
        encode("x", tensor)  # type: ignore[arg-type]


def test_not_a_tensor_is_refused() -> None:
    with pytest.raises(CodecError, match="expected a torch.Tensor"):
        encode("x", [1, 2])  # type: ignore[arg-type]


def test_buffer_refuses_overflow_short_payload_and_bad_bool() -> None:
    buf = TensorBuffer(wire_dtype("int32"), (2,), 8)
    with pytest.raises(CodecError, match="longer"):
        buf.write(b"\0" * 9)
    buf.write(b"\0" * 4)
    with pytest.raises(CodecError, match="4 of 8"):
        buf.finish()
    flags = TensorBuffer(wire_dtype("bool"), (2,), 2)
    flags.write(b"\x01\x02")
    with pytest.raises(CodecError, match="bool"):
        flags.finish()


def test_buffer_refuses_shape_that_does_not_match_length() -> None:
    with pytest.raises(CodecError):
        TensorBuffer(wire_dtype("float32"), (3,), 8)
    with pytest.raises(CodecError, match="dtype"):
        wire_dtype("float64")


@pytest.mark.parametrize(
    "tensor",
    [
        torch.zeros(2, dtype=torch.float64),
        np.zeros(2, dtype=np.complex64),
        "text",
        torch.zeros([1] * 33),
    ],
    ids=["float64", "numpy-complex", "not-a-tensor", "rank-33"],
)
def test_check_sendable_refuses_what_encode_refuses(tensor: object) -> None:
    with pytest.raises(CodecError):
        check_sendable("x", tensor)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        encode("x", tensor)  # type: ignore[arg-type]


def test_check_sendable_accepts_every_wire_dtype() -> None:
    for d in DTYPES.values():
        check_sendable("x", torch.zeros(2, dtype=d.torch_dtype))
    check_sendable("x", np.zeros(2, dtype=">f4"))
