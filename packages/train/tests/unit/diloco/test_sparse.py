import math

import numpy as np
import pytest
import torch

from mlnode.train.diloco.aggregation import sparse_mean
from mlnode.train.diloco.math import Compression, compress, decompress
from mlnode.train.diloco.round import ErrorFeedback
from mlnode.train.diloco.sparse import (
    InvalidSparse,
    SparseSpec,
    decode,
    densify,
    encode,
    wire_shapes,
)
from mlnode.train.diloco.validate import Layout, check_chunk

SPEC = SparseSpec(density=1 / 16, chunk=256)
SHAPE = (10, 100)  # 3 full chunks and a tail of 232


def sample(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def test_round_trip_keeps_the_top_k_of_each_chunk_with_signs() -> None:
    tensor = sample()
    parts = encode(tensor, SPEC)
    indices, values = decode(parts, tensor.numel(), SPEC)

    flat = tensor.reshape(-1)
    for chunk in range(4):
        lo, hi = chunk * 256, min((chunk + 1) * 256, flat.numel())
        k = SPEC.k_of(hi - lo)
        want = set((torch.topk(flat[lo:hi].abs(), k).indices + lo).tolist())
        got = indices[(indices >= lo) & (indices < hi)]
        assert set(got.tolist()) == want
    assert torch.equal(torch.sign(values), torch.sign(flat[indices]))
    # Two magnitude levels per chunk, each the mean of the magnitudes it stands for.
    assert float(((values.abs() - flat[indices].abs()).abs() / flat[indices].abs()).mean()) < 0.3
    assert len(indices) == SPEC.sent(tensor.numel())


@pytest.mark.parametrize(("density", "fmt_is_bitmap"), [(1 / 64, False), (0.4, True)])
def test_indices_take_the_smaller_coding(density: float, fmt_is_bitmap: bool) -> None:
    spec = SparseSpec(density=density, chunk=256)
    tensor = sample()
    parts = encode(tensor, spec)

    assert bool((parts["fmt"][:3] == 0).all()) is fmt_is_bitmap
    indices, _ = decode(parts, tensor.numel(), spec)
    assert len(set(indices.tolist())) == spec.sent(tensor.numel())
    if not fmt_is_bitmap:  # gaps of ~64 need 7-8 bits, far below a 32-byte bitmap per 4 values
        assert parts["idx"].numel() < 3 * 32 * 4 / 3


def test_error_feedback_sends_what_was_held_back() -> None:
    feedback = ErrorFeedback()
    tensor = sample()
    sent = torch.zeros(SHAPE)
    rounds = 40
    for _ in range(rounds):
        parts = feedback.encode("w", tensor, Compression.SPARSELOCO, SPEC)
        sent += decompress(parts, Compression.SPARSELOCO, SHAPE, SPEC)
    # What was sent plus the residual is exactly every round's input.
    assert torch.allclose(sent + feedback.residuals["w"], tensor * rounds, atol=1e-3)
    # The residual stays bounded, so the running average of what is sent tends to the input.
    assert float((sent / rounds - tensor).norm() / tensor.norm()) < 0.25
    once = decompress(encode(tensor, SPEC), Compression.SPARSELOCO, SHAPE, SPEC)
    assert float((once - tensor).norm() / tensor.norm()) > 0.8


def test_compress_returns_the_residual() -> None:
    tensor = sample()
    parts, residual = compress(tensor, Compression.SPARSELOCO, None, SPEC)
    assert residual is not None
    decoded = decompress(parts, Compression.SPARSELOCO, SHAPE, SPEC)
    assert torch.allclose(decoded + residual, tensor)
    assert int((decoded != 0).sum()) == SPEC.sent(tensor.numel())


def test_sparse_mean_equals_the_dense_mean() -> None:
    tensors = [sample(seed) for seed in range(3)]
    decoded = [decode(encode(t, SPEC), t.numel(), SPEC) for t in tensors]

    mean = sparse_mean(iter(decoded), 3, SHAPE)

    dense = torch.stack([densify(i, v, SHAPE) for i, v in decoded]).mean(0)
    assert torch.allclose(mean, dense, atol=1e-6)


def test_bytes_are_near_the_design() -> None:
    spec = SparseSpec()  # 1/64 of 4096-value chunks
    tensor = torch.randn(64, 4096, generator=torch.Generator().manual_seed(1))
    parts = encode(tensor, spec)
    nbytes = sum(t.numel() * t.element_size() for t in parts.values())
    # 64 values a chunk: 16 B of 2-bit codes, ~64 B of gaps, 8 B of scales, 1 format byte.
    assert nbytes / 64 < 100
    assert tensor.numel() * 4 / nbytes > 150


# --- refusals: each payload below is what a malicious peer could send in place of an honest one


def honest() -> dict[str, torch.Tensor]:
    return encode(sample(), SPEC)


def delta_gaps(parts: dict[str, torch.Tensor], chunk: int) -> tuple[np.ndarray, int, int]:
    """The gaps of chunk `chunk` (a delta-coded one), its width and byte offset."""
    fmt = parts["fmt"].numpy()
    k = SPEC.k_of(256)
    offset = int(sum(math.ceil(k * int(w) / 8) for w in fmt[:chunk]))
    width = int(fmt[chunk])
    raw = parts["idx"].numpy()[offset : offset + math.ceil(k * width / 8)]
    bits = np.unpackbits(raw)[: k * width].reshape(k, width)
    return (bits << np.arange(width - 1, -1, -1)).sum(axis=1), width, offset


def with_gaps(parts: dict[str, torch.Tensor], chunk: int, gaps: np.ndarray) -> None:
    _, width, offset = delta_gaps(parts, chunk)
    bits = (gaps[:, None] >> np.arange(width - 1, -1, -1)) & 1
    packed = np.packbits(bits.reshape(-1).astype(np.uint8))
    raw = parts["idx"].numpy().copy()
    raw[offset : offset + len(packed)] = packed
    parts["idx"] = torch.from_numpy(raw)


def refused(parts: dict[str, torch.Tensor], spec: SparseSpec = SPEC) -> str:
    with pytest.raises(InvalidSparse) as info:
        decode(parts, math.prod(SHAPE), spec)
    return str(info.value)


def test_a_repeated_index_is_refused() -> None:
    parts = honest()
    assert int(parts["fmt"][0]) > 0
    gaps, _, _ = delta_gaps(parts, 0)
    gaps[5] = 0
    with_gaps(parts, 0, gaps)
    assert "repeats" in refused(parts)


def test_an_index_out_of_range_is_refused() -> None:
    parts = honest()
    gaps, width, _ = delta_gaps(parts, 1)
    gaps[-1] = (1 << width) - 1  # pushes the last index past the chunk
    with_gaps(parts, 1, gaps)
    assert "out of range" in refused(parts)


def test_an_out_of_range_bit_in_a_bitmap_is_refused() -> None:
    spec = SparseSpec(density=0.4, chunk=256)
    parts = encode(torch.randn(250), spec)  # one chunk of 250: bitmap of 32 bytes, 6 spare bits
    raw = parts["idx"].numpy().copy()
    raw[-1] |= 1
    parts["idx"] = torch.from_numpy(raw)
    with pytest.raises(InvalidSparse, match="out of range"):
        decode(parts, 250, spec)


def test_a_density_above_the_agreed_one_is_refused() -> None:
    spec = SparseSpec(density=0.4, chunk=256)
    parts = encode(torch.randn(256), spec)
    raw = parts["idx"].numpy().copy()
    raw[:] = 255  # every index in the bitmap
    parts["idx"] = torch.from_numpy(raw)
    with pytest.raises(InvalidSparse, match="sends 256 values, agreed 102"):
        decode(parts, 256, spec)
    # A denser encoder's payload has more values than the agreed density allows.
    denser = encode(sample(), SparseSpec(density=1 / 8, chunk=256))
    assert "val is not" in refused(denser)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_a_bad_scale_is_refused(bad: float) -> None:
    parts = honest()
    parts["scale"] = parts["scale"].clone()
    parts["scale"][2, 1] = bad
    assert "scale" in refused(parts)


def test_index_bytes_that_do_not_match_their_formats_are_refused() -> None:
    parts = honest()
    longer = parts | {"idx": torch.cat([parts["idx"], torch.zeros(1, dtype=torch.uint8)])}
    assert "longer" in refused(longer)
    assert "shorter" in refused(parts | {"idx": parts["idx"][:-9]})
    fmt = parts["fmt"].clone()
    fmt[0] = 200
    assert "format" in refused(parts | {"fmt": fmt})


def test_check_chunk_refuses_a_malformed_sparse_pseudo_gradient() -> None:
    tensor = sample()
    layout: Layout = {"w": (SHAPE, torch.float32)}
    wire = {f"w/{k}": v for k, v in encode(tensor, SPEC).items()}
    assert check_chunk(wire, ["w"], layout, Compression.SPARSELOCO, None, SPEC) is None

    scale = wire["w/scale"].clone()
    scale[0, 0] = float("nan")
    bad = wire | {"w/scale": scale}
    reason = check_chunk(bad, ["w"], layout, Compression.SPARSELOCO, None, SPEC)
    assert reason is not None and "scale" in reason
    as_2d = wire | {"w/idx": wire["w/idx"].reshape(1, -1)}
    reason = check_chunk(as_2d, ["w"], layout, Compression.SPARSELOCO, None, SPEC)
    assert reason is not None and "w/idx" in reason


def test_wire_shapes_follow_the_agreed_spec() -> None:
    shapes = wire_shapes(1000, SPEC)
    assert shapes["fmt"] == ((4,), torch.uint8)
    assert shapes["scale"] == ((4, 2), torch.float32)
    assert shapes["val"] == ((math.ceil(SPEC.sent(1000) / 4),), torch.uint8)


@pytest.mark.parametrize(("density", "chunk"), [(0.0, 256), (1.5, 256), (0.1, 4), (0.1, 2**17)])
def test_a_spec_out_of_bounds_is_refused(density: float, chunk: int) -> None:
    with pytest.raises(ValueError):
        SparseSpec(density=density, chunk=chunk)


def test_error_decay_scales_the_residual_before_the_top_k() -> None:
    decayed = SparseSpec(density=1 / 16, chunk=256, error_decay=0.5)
    tensor, error = sample(0), sample(1)
    parts, residual = compress(tensor, Compression.SPARSELOCO, error, decayed)
    assert residual is not None
    target = tensor + 0.5 * error
    assert torch.equal(parts["idx"], encode(target, decayed)["idx"])
    decoded = decompress(parts, Compression.SPARSELOCO, SHAPE, decayed)
    assert torch.allclose(decoded + residual, target)
    # A decay of 1 keeps the whole residual, as before.
    _, kept = compress(tensor, Compression.SPARSELOCO, error, SPEC)
    assert kept is not None and not torch.allclose(kept, residual)


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_an_error_decay_out_of_bounds_is_refused(decay: float) -> None:
    with pytest.raises(ValueError):
        SparseSpec(error_decay=decay)
