"""The reference vector files reproduced: RNG, weights, target, inputs, RoPE, distances."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from mlnode.pow.v1.compute.engine import DistanceEngine
from mlnode.pow.v1.compute.inputs import nonce_input, nonce_permutation, target_vector
from mlnode.pow.v1.compute.model import PowModel, linear, rms_norm, rotate_pairs
from mlnode.pow.v1.compute.params import ModelParams
from mlnode.pow.v1.compute.rng import seed_words, seeded_generator
from mlnode.pow.v1.compute.rope import rope_frequencies, rope_tables
from mlnode.pow.v1.compute.weights import pool_size, seeded_weights, weight_pool
from mlnode.pow.v1.validation import invalid_mask, judge

#: SPEC §9: an f16-faithful port stays within this of the reference.
DIST_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model(vectors: dict[str, Any], vector_params: ModelParams) -> PowModel:
    """The seeded model of the vector file, on the CPU."""
    return PowModel(vectors["block_hash"], vector_params, [torch.device("cpu")])


@pytest.fixture(scope="module")
def recomputed(vectors: dict[str, Any], model: PowModel) -> dict[int, float]:
    """Distances of every nonce of the file, computed here."""
    engine = DistanceEngine(model, batch_size=64)
    dist = engine.distances(vectors["public_key"], vectors["nonces"])
    return dict(zip(vectors["nonces"], dist.tolist(), strict=True))


def test_rng_checkpoints(vectors: dict[str, Any]) -> None:
    for check in vectors["debug"]["rng_checks"]:
        words = seed_words(check["seed_string"], check["num_hashes"])
        assert words.tolist() == check["entropy_uint32"]
        rng = seeded_generator(check["seed_string"], check["num_hashes"])
        assert rng.bit_generator.random_raw(4).tolist() == check["pcg64_first4_uint64"]
        rng = seeded_generator(check["seed_string"], check["num_hashes"])
        assert rng.standard_normal(4).tolist() == check["first4_standard_normal"]


def test_derived_shapes(vectors: dict[str, Any], vector_params: ModelParams) -> None:
    derived = vectors["derived"]
    assert vector_params.head_dim == derived["head_dim"]
    assert vector_params.ffn_hidden_dim == derived["ffn_hidden_dim"]
    assert vector_params.total_parameters() == derived["total_params"]
    assert pool_size(vector_params) == derived["pool_size"]


def test_pool_and_weight_checksums(vectors: dict[str, Any], vector_params: ModelParams) -> None:
    pool = weight_pool(vectors["block_hash"], pool_size(vector_params))
    assert pool[:8].astype(float).tolist() == vectors["debug"]["pool_first8_fp16"]
    weights = dict(seeded_weights(vectors["block_hash"], vector_params))
    assert list(weights) == list(vectors["weights_checksums"])
    for name, checksum in vectors["weights_checksums"].items():
        assert math.fsum(weights[name].astype(np.float64).ravel()) == checksum, name
    for info in vectors["debug"]["param_init"]:
        flat = weights[info["name"]].ravel().astype(float)
        assert flat[:4].tolist() == info["first4"], info["name"]
        assert flat[-2:].tolist() == info["last2"], info["name"]


def test_target_input_permutation(vectors: dict[str, Any], vector_params: ModelParams) -> None:
    block_hash, key = vectors["block_hash"], vectors["public_key"]
    target = target_vector(block_hash, vector_params.vocab_size)
    assert target[:8].tolist() == vectors["target_first8"]
    assert math.isclose(float(np.linalg.norm(target)), 1.0, abs_tol=1e-15)
    inputs = nonce_input(block_hash, key, 0, vector_params).ravel()[:8]
    assert inputs.astype(float).tolist() == vectors["input_nonce0_first8"]
    perm = nonce_permutation(block_hash, key, 0, vector_params.vocab_size)
    assert perm[:8].tolist() == vectors["permutation_nonce0_first8"]


def test_rope_tables(vectors: dict[str, Any], vector_params: ModelParams) -> None:
    attention = vectors["debug"]["layer0_attention_debug"]
    freqs = rope_frequencies(vector_params)
    assert freqs.tolist() == attention["rope_freqs_f32_after_scaling"]
    cos, sin = rope_tables(vector_params)
    assert cos[1, :8].float().tolist() == vectors["debug"]["rope_cos_pos1_first8_fp16"]
    assert sin[1, :8].float().tolist() == vectors["debug"]["rope_sin_pos1_first8_fp16"]
    last = vector_params.seq_len - 1
    assert cos[last].float().tolist() == attention["rope_cos_last_pos_all_fp16"]
    assert sin[last].float().tolist() == attention["rope_sin_last_pos_all_fp16"]


def test_layer0_attention_internals(vectors: dict[str, Any], model: PowModel) -> None:
    """Wq, Wk and RoPE are invisible in the distances (SPEC §9), so check them directly."""
    attention = vectors["debug"]["layer0_attention_debug"]
    p = model.params
    x = torch.from_numpy(nonce_input(vectors["block_hash"], vectors["public_key"], 0, p))[None]
    w = model.layers[0].w
    a = rms_norm(x, w["attention_norm.weight"], p.norm_eps)
    assert a[0, 0, :8].float().tolist() == attention["attention_norm_out_nonce0_pos0_first8"]
    q = linear(a, w["attention.wq.weight"]).view(1, p.seq_len, p.n_heads, -1)
    k = linear(a, w["attention.wk.weight"]).view(1, p.seq_len, p.n_heads, -1)
    assert q[0, 1, 0, :8].float().tolist() == attention["q_pre_rope_nonce0_pos1_head0_first8"]
    cos, sin = rope_tables(p)
    q_rot = rotate_pairs(q, cos[: p.seq_len], sin[: p.seq_len])
    k_rot = rotate_pairs(k, cos[: p.seq_len], sin[: p.seq_len])
    assert q_rot[0, 1, 0, :8].float().tolist() == attention["q_post_rope_nonce0_pos1_head0_first8"]
    assert q_rot[0, -1, 0].float().tolist() == attention["q_post_rope_nonce0_pos15_head0_all"]
    assert k_rot[0, -1, 0].float().tolist() == attention["k_post_rope_nonce0_pos15_head0_all"]


def test_scaled_rope_frequencies_follow_llama31() -> None:
    """use_scaled_rope (the reference crashes on it): long wavelengths shrink by 8, short stay."""
    params = ModelParams(128, 1, 1, 1, 512, None, 256, 1e-5, 500000.0, True, 16)
    plain = rope_frequencies(ModelParams(**{**params.__dict__, "use_scaled_rope": False}))
    scaled = rope_frequencies(params)
    wavelen = 2 * math.pi / plain
    assert np.array_equal(scaled[wavelen < 2048], plain[wavelen < 2048])
    assert np.allclose(scaled[wavelen > 8192], plain[wavelen > 8192] / 8, rtol=1e-6)
    middle = (wavelen >= 2048) & (wavelen <= 8192)
    assert middle.any()
    assert np.all(scaled[middle] < plain[middle]) and np.all(scaled[middle] > plain[middle] / 8)
    model = PowModel("scaled", params, [torch.device("cpu")])
    assert torch.isfinite(model.forward(torch.zeros(1, 16, 128, dtype=torch.float16) + 0.5)).all()


def test_distances_match_reference(vectors: dict[str, Any], recomputed: dict[int, float]) -> None:
    reference = np.array(vectors["dist"])
    ours = np.array([recomputed[n] for n in vectors["nonces"]])
    assert np.max(np.abs(ours - reference)) <= DIST_TOLERANCE
    r_target = vectors["r_target_for_tests"]
    assert int((ours < r_target).sum()) == vectors["n_valid_at_r_target"]


def test_f16_cpu_matmul_matches_reference(
    vectors: dict[str, Any], vector_params: ModelParams
) -> None:
    """torch's own f16 GEMM, as the reference ran on CPU (a subset of nonces: it is slow)."""
    model = PowModel(vectors["block_hash"], vector_params, [torch.device("cpu")], torch.float16)
    nonces = vectors["nonces"][:64]
    ours = DistanceEngine(model, batch_size=64).distances(vectors["public_key"], nonces)
    reference = np.array(vectors["dist"][:64])
    assert np.max(np.abs(ours - reference)) <= DIST_TOLERANCE


def test_nonce0_logits(vectors: dict[str, Any], model: PowModel) -> None:
    x = nonce_input(vectors["block_hash"], vectors["public_key"], 0, model.params)
    logits = model.forward(torch.from_numpy(x)[None])[0]
    expected = np.array(vectors["debug"]["output_nonce0_first8"])
    assert np.max(np.abs(logits[:8].numpy() - expected)) <= 1e-5


@pytest.mark.parametrize("example", ["honest", "fraud_10pct"])
def test_validation_examples(
    vectors: dict[str, Any], recomputed: dict[int, float], example: str
) -> None:
    case = vectors["validation_examples"][example]
    r_target = vectors["validation_examples"]["r_target"]
    ours = np.array([recomputed[n] for n in case["batch_nonces"]])
    assert np.max(np.abs(ours - np.array(case["recomputed_dist"]))) <= DIST_TOLERANCE
    n_invalid = int(invalid_mask(case["claimed_dist"], ours, r_target).sum())
    for expected in case["results"]:
        verdict = judge(n_invalid, case["n"], expected["fraud_threshold"])
        assert verdict.n_invalid == expected["n_invalid"]
        assert math.isclose(
            verdict.probability_honest, expected["probability_honest"], rel_tol=1e-9
        )
        assert verdict.fraud_detected == expected["fraud_detected"]
