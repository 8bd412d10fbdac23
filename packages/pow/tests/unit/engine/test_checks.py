"""Request checks of the engine's PoC routes: each refusal has its status and names its field."""

from dataclasses import replace
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from mlnode.pow.engine.checks import EngineFacts, check_params, nonce_sets_differ, proof_shape
from mlnode.pow.engine.errors import PocHttpError
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.poc.decode import Codebook, codebook_sha256
from mlnode.pow.poc.schemas import PocParams

POINTS = torch.nn.functional.normalize(
    torch.randn(16, 256, generator=torch.Generator().manual_seed(0)), dim=1
)
CODEBOOK = Codebook.from_tensor(POINTS, codebook_sha256(POINTS))
FACTS = EngineFacts(
    ("served",), "Qwen3ForCausalLM", hidden=256, max_model_len=2048, codebook=CODEBOOK
)


def refusal(
    params: dict[str, object], facts: EngineFacts = FACTS, settings: dict[str, Any] | None = None
) -> PocHttpError:
    with pytest.raises(PocHttpError) as caught:
        check = PocParams.model_validate(params)
        proof_shape(
            check,
            block_hash="b",
            public_key="k",
            stronger_rng=False,
            batch_size=8,
            n_nonces=8,
            facts=facts,
            settings=PocEngineSettings(**(settings or {})),
        )
    return caught.value


@pytest.mark.parametrize(
    ("params", "settings", "status", "param"),
    [
        ({"model": "other", "seq_len": 8}, {}, 409, "params.model"),
        ({"model": "served", "seq_len": 8}, {"pin_seq_len": 16}, 409, "params.seq_len"),
        ({"model": "served", "seq_len": 8, "k_dim": 8}, {"pin_k_dim": 12}, 409, "params.k_dim"),
        ({"model": "served", "seq_len": 5000}, {}, 422, "params.seq_len"),
        ({"model": "served", "seq_len": 64}, {"max_seq_len": 32}, 422, "params.seq_len"),
        ({"model": "served", "seq_len": 8, "k_dim": 257}, {}, 422, "params.k_dim"),
        (
            {"model": "served", "seq_len": 2000, "decode": True, "max_tokens": 100},
            {},
            422,
            "params.max_tokens",
        ),
    ],
)
def test_refusals_name_the_field(
    params: dict[str, object], settings: dict[str, object], status: int, param: str
) -> None:
    error = refusal(params, settings=settings)
    assert (error.status, error.param) == (status, param)
    assert error.body()["error"]["param"] == param


def test_decode_without_a_codebook_is_a_conflict_that_says_what_to_set() -> None:
    facts = EngineFacts(("served",), "Qwen3ForCausalLM", hidden=256, max_model_len=2048)
    error = refusal({"model": "served", "seq_len": 8, "decode": True, "max_tokens": 4}, facts)
    assert (error.status, error.param) == (409, "params.decode")
    assert "MLNODE_POC_CODEBOOK_PATH" in error.message


def test_decode_needs_a_hidden_size_of_the_codebook_dim() -> None:
    facts = EngineFacts(("served",), "Tiny", hidden=128, max_model_len=2048, codebook=CODEBOOK)
    error = refusal({"model": "served", "seq_len": 8, "decode": True, "max_tokens": 4}, facts)
    assert (error.status, error.param) == (422, "params.decode")


def test_an_unsupported_model_is_refused_with_its_reason() -> None:
    facts = EngineFacts(
        ("served",),
        "Qwen3NextForCausalLM",
        256,
        2048,
        unsupported="Qwen3NextForCausalLM: 1 attention layers for 4 decoder layers",
    )
    error = refusal({"model": "served", "seq_len": 8}, facts)
    assert error.status == 409 and "Qwen3NextForCausalLM" in error.message


def test_chunks_follow_batch_size_within_the_row_cap() -> None:
    def chunk(batch_size: int, n: int | None, seq_len: int = 100, cap: int = 1000) -> int:
        return proof_shape(
            PocParams(model="served", seq_len=seq_len),
            block_hash="b",
            public_key="k",
            stronger_rng=False,
            batch_size=batch_size,
            n_nonces=n,
            facts=FACTS,
            settings=PocEngineSettings(max_chunk_tokens=cap),
        ).chunk

    assert chunk(4, 50) == 4
    assert chunk(32, 50) == 10
    assert chunk(0, 7) == 7
    assert chunk(0, 50) == 10
    assert chunk(5, None, seq_len=2000) == 1
    decode = PocParams(model="served", seq_len=64, decode=True, max_tokens=36)
    shape = proof_shape(
        decode,
        block_hash="b",
        public_key="k",
        stronger_rng=False,
        batch_size=32,
        n_nonces=None,
        facts=FACTS,
        settings=PocEngineSettings(max_chunk_tokens=1000),
    )
    assert (shape.chunk, shape.max_tokens, shape.codebook_sha256) == (10, 36, CODEBOOK.sha256)


def test_without_a_batch_size_the_engine_chooses() -> None:
    def chunk(batch_size: int | None, n: int | None, config: PocEngineSettings) -> int:
        facts = replace(FACTS, max_num_seqs=6)
        return proof_shape(
            PocParams(model="served", seq_len=10),
            block_hash="b",
            public_key="k",
            stronger_rng=False,
            batch_size=batch_size,
            n_nonces=n,
            facts=facts,
            settings=config,
        ).chunk

    unset, h200 = PocEngineSettings(max_chunk_tokens=1000), PocEngineSettings(batch_size=16)
    assert chunk(None, 50, unset) == 6  # the engine's max_num_seqs
    assert chunk(None, None, unset) == 6
    assert chunk(None, 50, h200) == 16
    assert chunk(None, None, PocEngineSettings(batch_size=500, max_chunk_tokens=1000)) == 100
    assert chunk(3, 50, h200) == 3  # a caller's batch_size still wins
    assert chunk(0, 50, h200) == 50
    assert chunk(0, None, h200) == 16


def test_batch_size_setting_is_bounded() -> None:
    for bad in (0, 5000):
        with pytest.raises(ValidationError, match="batch_size"):
            PocEngineSettings(batch_size=bad)


def test_check_params_accepts_a_served_model() -> None:
    check_params(PocParams(model="served", seq_len=128), FACTS, PocEngineSettings())


@pytest.mark.parametrize(
    ("raw", "differ"),
    [
        ({"nonces": [1, 2], "validation": {"artifacts": [{"nonce": 2}, {"nonce": 1}]}}, False),
        ({"nonces": [1, 2], "validation": {"artifacts": [{"nonce": 1}]}}, True),
        ({"nonces": [1], "validation": {"artifacts": [{"nonce": 1}, {"nonce": 3}]}}, True),
        ({"nonces": [1], "validation": None}, False),
        ({"nonces": [[1]], "validation": {"artifacts": [{"nonce": 1}]}}, False),
        ([1, 2], False),
    ],
)
def test_nonce_sets_differ(raw: object, differ: bool) -> None:
    assert nonce_sets_differ(raw) is differ


def test_decode_where_the_moe_routing_cannot_be_steered_is_a_conflict_with_the_reason() -> None:
    reason = "Qwen3MoeForCausalLM: MoE layer layers.0.mlp.experts routes inside a monolithic kernel"
    facts = EngineFacts(
        ("served",), "Qwen3MoeForCausalLM", hidden=256, max_model_len=2048, codebook=CODEBOOK,
        decode_unsupported=reason,
    )  # fmt: skip
    error = refusal({"model": "served", "seq_len": 8, "decode": True, "max_tokens": 4}, facts)
    assert (error.status, error.param) == (409, "params.decode")
    assert "monolithic" in error.message
    vector = proof_shape(
        PocParams(model="served", seq_len=8), block_hash="b", public_key="k", stronger_rng=False,
        batch_size=8, n_nonces=8, facts=facts, settings=PocEngineSettings(),
    )  # fmt: skip
    assert not vector.decode  # the vector scheme does not route by the ladder: it runs
