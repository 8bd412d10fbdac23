"""PoC v2 decode-scheme pieces (SPEC §3): codebook file and hash, step seeds, picks, snapping."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from mlnode.pow.poc.decode import (
    LADDER_OFF,
    SALT_EMBED,
    SALT_PICK,
    Codebook,
    CodebookError,
    codebook_sha256,
    decode_pick_indices,
    ladder_gate_weights,
    routing_ladder,
    seeded_expert_logits,
    snap,
    step_embeddings,
    step_key,
    step_seed,
)
from mlnode.pow.poc.rng import murmur3_32, normal, seed_from_string

HIDDEN = 256
#: sha256 of the float32 bytes of the test codebook (computed once from the shipped file).
TEST_CODEBOOK_SHA256 = "840ab5bdafdd257964843975c7e901761b143b93ac6b8d86d99345113f157c6b"


def _ids(vectors: dict[str, Any]) -> tuple[str, str]:
    return vectors["params"]["block_hash"], vectors["params"]["public_key"]


def test_the_test_codebook_loads_with_its_hash(poc_codebook_path: Path) -> None:
    cb = Codebook.load(poc_codebook_path, TEST_CODEBOOK_SHA256.upper())
    assert (cb.n_points, cb.dim) == (16, 256)
    assert cb.points.dtype == torch.float32
    torch.testing.assert_close(cb.points.norm(dim=-1), torch.ones(16), rtol=0, atol=1e-5)


def test_another_hash_is_refused_naming_both(poc_codebook_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(CodebookError, match=f"{TEST_CODEBOOK_SHA256}.*{wrong}"):
        Codebook.load(poc_codebook_path, wrong)


def test_raw_float32_file_has_the_same_hash(poc_codebook_path: Path, tmp_path: Path) -> None:
    points = load_file(str(poc_codebook_path))["codebook"]
    raw = tmp_path / "codebook.f32"
    raw.write_bytes(points.numpy().astype("<f4").tobytes())
    cb = Codebook.load(raw, TEST_CODEBOOK_SHA256)
    assert torch.equal(cb.points, points)
    assert codebook_sha256(points) == TEST_CODEBOOK_SHA256


def test_bad_codebook_files_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.f32"
    short.write_bytes(b"\0" * 1000)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    other = tmp_path / "other.safetensors"
    save_file({"points": torch.zeros(16, 256)}, str(other))
    nan = tmp_path / "nan.safetensors"
    save_file({"codebook": torch.full((16, 256), float("nan"))}, str(nan))
    flat = tmp_path / "flat.safetensors"
    save_file({"codebook": torch.zeros(256)}, str(flat))
    cases = [
        (tmp_path / "absent.f32", "cannot be read"),
        (short, "float32 rows"),
        (garbage, "not a readable safetensors"),
        (other, "no tensor named 'codebook'"),
        (nan, "NaN"),
        (flat, "matrix"),
    ]
    for path, message in cases:
        with pytest.raises(CodebookError, match=message):
            Codebook.load(path, TEST_CODEBOOK_SHA256)


def test_step_key_and_seed_follow_the_formula() -> None:
    assert step_key(3, 5, SALT_EMBED) == (5 * 0x9E3779B1 + 3 * 0x85EBCA77 + 0x0D) % 2**32
    assert step_key(1, -1, SALT_PICK) == ((2**32 - 1) * 0x9E3779B1 + 0x85EBCA77 + 0x91) % 2**32
    key = step_key(7, 15, SALT_PICK)
    assert step_seed(123, 7, 15, SALT_PICK) == int(murmur3_32(torch.tensor([key]), 123)[0])


def test_step_embeddings_use_the_step_seed(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    e = step_embeddings(bh, pk, [0, 1], 4, [3, 9], HIDDEN, torch.bfloat16)
    assert e.shape == (2, HIDDEN) and e.dtype == torch.bfloat16
    base = seed_from_string(f"{bh}_{pk}_nonce1")
    want = normal(step_seed(base, 4, 9, SALT_EMBED), HIDDEN).to(torch.bfloat16)
    assert torch.equal(e[1], want)


def test_step0_pick(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    idx = decode_pick_indices(bh, pk, [0, 1], 0, None, HIDDEN)
    assert idx.shape == (2, 256)
    for row, n in zip(idx, (0, 1), strict=True):
        assert row[:8].tolist() == poc_vectors["decode"]["step0_pick_first8"][str(n)]
        assert sorted(row.tolist()) == list(range(256))


def test_later_picks_depend_on_the_previous_index(poc_vectors: dict[str, Any]) -> None:
    bh, pk = _ids(poc_vectors)
    a = decode_pick_indices(bh, pk, [0], 2, [3], 1024)
    b = decode_pick_indices(bh, pk, [0], 2, [4], 1024)
    assert a.shape == (1, 256) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="previous"):
        decode_pick_indices(bh, pk, [0], 2, None, 1024)
    with pytest.raises(ValueError, match="hidden >= 256"):
        decode_pick_indices(bh, pk, [0], 0, None, 128)


def test_snap_picks_the_nearest_point() -> None:
    points = torch.eye(4, 8)
    cb = Codebook.from_tensor(points, codebook_sha256(points))
    h = torch.zeros(3, 10)
    h[0, 2] = 5.0
    h[1, 9] = -1.0
    h[1, 0] = 0.5
    h[2, 0] = float("nan")
    idx = torch.tensor(
        [[0, 1, 2, 3, 4, 5, 6, 7], [9, 1, 2, 3, 4, 5, 6, 0], [0, 1, 2, 3, 4, 5, 6, 7]]
    )
    k, scores = snap(h, idx, cb)
    assert k.tolist() == [2, 1, -1]
    assert scores.shape == (3, 4)
    torch.testing.assert_close(scores[0], torch.tensor([0.0, 0.0, 1.0, 0.0]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="dim 8"):
        snap(h, idx[:, :4], cb)


def test_seeded_expert_logits_are_a_contiguous_run() -> None:
    logits = seeded_expert_logits("bh", 3, 1, 0, n_experts=8, top_k=3, base=100.0)
    start = int(murmur3_32(torch.tensor([0]), seed_from_string("bh_n3_route_layer_1"))[0]) % 8
    for j, value in enumerate((103.0, 102.0, 101.0)):
        assert logits[(start + j) % 8] == value
    assert int((logits == -1e4).sum()) == 5


def _spec_murmur(key: int, seed: int) -> int:
    """SPEC §2.1 word for word: one murmur3 block, no length step, then fmix."""
    m = 0xFFFFFFFF
    k = (key * 0xCC9E2D51) & m
    k = ((k << 15) | (k >> 17)) & m
    k = (k * 0x1B873593) & m
    h = seed ^ k
    h = ((h << 13) | (h >> 19)) & m
    h = (h * 5 + 0xE6546B64) & m
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def _spec_seed(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


#: (nonce, layer, step, n_experts, top_k, start of the run): starts written down from the SPEC
#: formula; the test recomputes them with the plain-Python transcription above as well.
LADDER_TABLE = [
    (0, 0, 0, 16, 4, 11),
    (7, 1, 0, 16, 4, 5),
    (7, 1, 1, 16, 4, 7),
    (7, 2, 31, 16, 4, 12),
    (123456, 5, 255, 128, 8, 38),
    (3, 1, 2, 8, 8, 3),
]


@pytest.mark.parametrize(("nonce", "layer", "step", "n", "k", "start"), LADDER_TABLE)
def test_routing_ladder_matches_the_spec_formula(
    nonce: int, layer: int, step: int, n: int, k: int, start: int
) -> None:
    ladder = routing_ladder("bh0", [nonce], layer, [step], n_experts=n, top_k=k)[0]
    begin = _spec_murmur(step, _spec_seed(f"bh0_n{nonce}_route_layer_{layer}")) % n
    assert begin == start
    expected = [LADDER_OFF] * n
    for j in range(k):
        expected[(begin + j) % n] = 100.0 + k - j
    assert ladder.tolist() == expected


def test_routing_ladder_rows_follow_their_own_nonce_and_step() -> None:
    rows = routing_ladder("bh0", [0, 7, 7], 1, [0, 0, 1], n_experts=16, top_k=4)
    for row, (nonce, step) in zip(rows, [(0, 0), (7, 0), (7, 1)], strict=True):
        assert torch.equal(row, seeded_expert_logits("bh0", nonce, 1, step, 16, 4))


def test_ladder_gate_weights_are_the_softmax_of_the_ladder_over_the_selection() -> None:
    ladder = routing_ladder("bh0", [7], 1, [1], n_experts=16, top_k=4)
    ids = torch.topk(ladder, 4).indices
    weights = ladder_gate_weights(ladder, ids)
    expected = torch.softmax(torch.tensor([[104.0, 103.0, 102.0, 101.0]]), dim=-1)
    torch.testing.assert_close(weights, expected)
    # Written over whatever order the engine returns its selection in.
    flipped = ladder_gate_weights(ladder, ids.flip(-1))
    torch.testing.assert_close(flipped, expected.flip(-1))
