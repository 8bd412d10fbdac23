"""PoC v2 route bodies (SPEC §4.1, §4.3): the network node's bodies parse, bad fields are named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mlnode.pow.poc.schemas import (
    MAX_NONCES,
    GeneratedCallback,
    PocEncoding,
    PocGenerateBody,
    PocGenerateQueued,
    PocGenerateRequest,
    PocInitGenerateBody,
    PocInitGenerateRequest,
    PocInitGenerateResponse,
    PocStatus,
    PocStopResponse,
    ValidatedCallback,
)

BLOCK = {
    "block_hash": "3f9a",
    "block_height": 120,
    "public_key": "gonka1abc",
    "node_id": 1,
    "node_count": 3,
}

#: PoCInitGenerateRequestV2 as the Go node marshals it (k_dim, batch_size omitted on purpose).
GO_INIT = (
    '{"block_hash":"3f9a","block_height":120,"public_key":"gonka1abc","node_id":1,"node_count":3,'
    '"params":{"model":"Qwen/Qwen3-32B-FP8","seq_len":1024},'
    '"url":"http://10.0.0.2:9100/v2/poc-batches/Qwen%252FQwen3-32B-FP8","poc_stronger_rng":true}'
)
GO_INIT_DECODE = (
    '{"block_hash":"3f9a","block_height":120,"public_key":"gonka1abc","node_id":0,"node_count":1,'
    '"params":{"model":"m","seq_len":256,"decode":true,"max_tokens":256},"url":"http://h/cb"}'
)
#: PoCGenerateRequestV2 (validation) as the Go node marshals it.
GO_VALIDATE = (
    '{"block_hash":"3f9a","block_height":120,"public_key":"gonka1prover","node_id":0,'
    '"node_count":1,"nonces":[5,9],"params":{"model":"m","seq_len":1024},"url":"http://h/cb",'
    '"validation":{"artifacts":[{"nonce":5,"vector_b64":"AAAA"},{"nonce":9,"vector_b64":"AAAA"}]},'
    '"stat_test":{"dist_threshold":0.4,"p_mismatch":0.1,"p_value_threshold":0.05}}'
)


def _error_locs(model: type[BaseModel], body: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    return [e["loc"] for e in err.value.errors()]


def _error_text(model: type[BaseModel], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    return str(err.value)


def test_go_init_body_parses_with_defaults() -> None:
    req = PocInitGenerateRequest.model_validate_json(GO_INIT)
    assert (req.params.k_dim, req.batch_size, req.group_id, req.n_groups) == (12, None, 0, 1)
    assert req.poc_stronger_rng and not req.params.is_decode
    assert req.params.scheme == "prefill"


def test_go_decode_switch_selects_the_decode_scheme() -> None:
    req = PocInitGenerateRequest.model_validate_json(GO_INIT_DECODE)
    assert req.params.is_decode and req.params.max_tokens == 256
    plugin = {**BLOCK, "params": {"model": "m", "seq_len": 8, "scheme": "decode", "max_tokens": 4}}
    assert PocInitGenerateRequest.model_validate(plugin).params.is_decode


def test_go_validation_body_parses_with_p_value_threshold() -> None:
    req = PocGenerateRequest.model_validate_json(GO_VALIDATE)
    assert req.stat_test is not None and req.stat_test.fraud_threshold == 0.05
    assert req.validation is not None and [a.nonce for a in req.validation.artifacts] == [5, 9]
    assert not req.wait and req.batch_size is None


def test_the_node_layer_keeps_unknown_keys_and_leaves_cross_checks_to_the_engine() -> None:
    go = json.loads(GO_VALIDATE)
    mismatched = {**go, "nonces": [5], "future_field": 1}
    relayed = PocGenerateBody.model_validate(mismatched).model_dump(mode="json", exclude_unset=True)
    assert relayed == mismatched, "the node forwards the body as it came"
    assert "validation.artifacts" in _error_text(PocGenerateRequest, mismatched)
    decode = json.loads(GO_INIT_DECODE)
    assert PocInitGenerateBody.model_validate(decode).model_dump(exclude_unset=True) == decode
    assert ("params", "seq_len") in _error_locs(
        PocInitGenerateBody, {**decode, "params": {"model": "m", "seq_len": 0}}
    )


def test_nonce_share_of_an_engine() -> None:
    req = PocInitGenerateRequest.model_validate(
        {**json.loads(GO_INIT), "group_id": 1, "n_groups": 2}
    )
    assert [req.nonce(x) for x in range(3)] == [4, 10, 16]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"model": "m", "seq_len": 0}, ("params", "seq_len")),
        ({"model": "m", "seq_len": 10**6}, ("params", "seq_len")),
        ({"model": "m", "seq_len": 8, "k_dim": 1}, ("params", "k_dim")),
        ({"model": "m", "seq_len": 8, "k_dim": 5000}, ("params", "k_dim")),
        ({"model": "", "seq_len": 8}, ("params", "model")),
        ({"seq_len": 8}, ("params", "model")),
        ({"model": "m", "seq_len": 8, "max_tokens": -1}, ("params", "max_tokens")),
        ({"model": "m", "seq_len": 8, "scheme": "other"}, ("params", "scheme")),
    ],
)
def test_params_out_of_range_are_named(params: dict[str, Any], loc: tuple[str, ...]) -> None:
    assert loc in _error_locs(PocInitGenerateRequest, {**BLOCK, "params": params})


def test_decode_needs_steps_and_one_scheme() -> None:
    body = {**BLOCK, "params": {"model": "m", "seq_len": 8, "decode": True}}
    assert "params.max_tokens" in _error_text(PocInitGenerateRequest, body)
    body["params"] = {
        "model": "m",
        "seq_len": 8,
        "decode": True,
        "scheme": "prefill",
        "max_tokens": 3,
    }
    assert "params.scheme" in _error_text(PocInitGenerateRequest, body)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 10**6}, "batch_size"),
        ({"node_count": 0}, "node_count"),
        ({"node_id": -1}, "node_id"),
        ({"block_height": -5}, "block_height"),
        ({"block_hash": ""}, "block_hash"),
        ({"url": "ftp://x"}, "url"),
        ({"group_id": -1}, "group_id"),
    ],
)
def test_init_fields_out_of_range_are_named(extra: dict[str, Any], field: str) -> None:
    body = {**BLOCK, "params": {"model": "m", "seq_len": 8}, **extra}
    assert (field,) in _error_locs(PocInitGenerateRequest, body)


def test_init_share_must_exist() -> None:
    body = {**BLOCK, "node_id": 3, "params": {"model": "m", "seq_len": 8}}
    assert "node_id 3 must be below node_count 3" in _error_text(PocInitGenerateRequest, body)
    body = {**BLOCK, "group_id": 2, "n_groups": 2, "params": {"model": "m", "seq_len": 8}}
    assert "group_id" in _error_text(PocInitGenerateRequest, body)


def _generate(**extra: Any) -> dict[str, Any]:
    return {**BLOCK, "nonces": [1, 2, 3], "params": {"model": "m", "seq_len": 8}, **extra}


def test_generate_nonces_are_bounded_and_distinct() -> None:
    assert ("nonces",) in _error_locs(PocGenerateRequest, _generate(nonces=[]))
    too_many = list(range(MAX_NONCES + 1))
    assert ("nonces",) in _error_locs(PocGenerateRequest, _generate(nonces=too_many))
    assert ("nonces", 1) in _error_locs(PocGenerateRequest, _generate(nonces=[1, -2]))
    assert ("nonces", 0) in _error_locs(PocGenerateRequest, _generate(nonces=[2**63]))
    assert "nonces holds duplicates" in _error_text(PocGenerateRequest, _generate(nonces=[1, 1]))


def test_validation_artifacts_must_match_the_nonces() -> None:
    arts = [{"nonce": 1, "vector_b64": "AAAA"}, {"nonce": 2, "vector_b64": "AAAA"}]
    text = _error_text(PocGenerateRequest, _generate(validation={"artifacts": arts}))
    assert "validation.artifacts" in text
    twice = [*arts, {"nonce": 3}, {"nonce": 3}]
    assert "twice" in _error_text(PocGenerateRequest, _generate(validation={"artifacts": twice}))
    long_text = [{"nonce": 1, "vector_b64": "A" * 10_000}]
    locs = _error_locs(
        PocGenerateRequest, _generate(nonces=[1], validation={"artifacts": long_text})
    )
    assert ("validation", "artifacts", 0, "vector_b64") in locs


def test_stat_test_out_of_range_is_named() -> None:
    locs = _error_locs(PocGenerateRequest, _generate(stat_test={"p_mismatch": 2}))
    assert ("stat_test", "p_mismatch") in locs


def test_answers_have_the_spec_shapes() -> None:
    assert PocInitGenerateResponse().model_dump(mode="json") == {
        "status": "OK",
        "pow_status": {"status": "GENERATING"},
    }
    assert PocStopResponse().model_dump(mode="json") == {
        "status": "OK",
        "pow_status": {"status": "STOPPED"},
    }
    assert PocStatus(status="IDLE").model_dump(mode="json") == {
        "status": "IDLE",
        "config": None,
        "stats": None,
    }
    queued = PocGenerateQueued(request_id="r1", queued_count=4).model_dump(mode="json")
    assert queued == {"status": "queued", "request_id": "r1", "queued_count": 4}
    assert PocEncoding(k_dim=12).model_dump() == {"dtype": "f16", "k_dim": 12, "endian": "le"}


def test_callback_bodies() -> None:
    mined = GeneratedCallback(
        public_key="pk",
        block_hash="bh",
        block_height=1,
        node_id=0,
        artifacts=[{"nonce": 4, "vector_b64": "AAAA"}],
        encoding=PocEncoding(k_dim=12),
    ).model_dump(mode="json", exclude_none=True)
    assert mined["artifacts"] == [{"nonce": 4, "vector_b64": "AAAA"}]
    assert "request_id" not in mined
    verdict = ValidatedCallback(
        request_id="r",
        block_hash="bh",
        block_height=1,
        public_key="pk",
        node_id=0,
        n_total=64,
        n_mismatch=13,
        mismatch_nonces=[0],
        p_value=0.0099,
        fraud_detected=True,
    ).model_dump(mode="json")
    assert set(verdict) >= {"n_total", "n_mismatch", "mismatch_nonces", "p_value", "fraud_detected"}
