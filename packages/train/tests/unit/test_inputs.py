"""Data files, models from a directory or a config, tokenizers, checkpoints, legacy bodies."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from mlnode.common.errors import InvalidRequest
from mlnode.train.checkpoint import Checkpoint, list_checkpoints, load_latest, save_checkpoint
from mlnode.train.data import TokenBatches, eval_windows, read_tokens, split_eval
from mlnode.train.legacy import LegacyTrainBody, from_legacy
from mlnode.train.model import ByteTokenizer, build_model, load_tokenizer
from mlnode.train.schemas import DatasetSpec, ModelSpec
from mlnode.train.testing import TINY_LLAMA


def test_text_and_jsonl_are_tokenized_as_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hé")
    (tmp_path / "b.jsonl").write_text('{"text": "ab"}\n\n{"text": "c"}\n')

    assert read_tokens(DatasetSpec(path=str(tmp_path / "a.txt")), ByteTokenizer()).tolist() == [
        104,
        195,
        169,
    ]
    tokens = read_tokens(DatasetSpec(path=str(tmp_path / "b.jsonl")), ByteTokenizer())
    assert bytes(tokens.tolist()) == b"ab\nc"


def test_token_files(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.arange(10, dtype=np.int32))
    save_file({"tokens": torch.arange(5)}, str(tmp_path / "t.safetensors"))
    save_file({"other": torch.arange(5)}, str(tmp_path / "bad.safetensors"))

    assert read_tokens(DatasetSpec(path=str(tmp_path / "t.npy")), ByteTokenizer()).sum() == 45
    assert (
        read_tokens(DatasetSpec(path=str(tmp_path / "t.safetensors")), ByteTokenizer()).numel() == 5
    )
    with pytest.raises(InvalidRequest, match="tokens"):
        read_tokens(DatasetSpec(path=str(tmp_path / "bad.safetensors")), ByteTokenizer())


@pytest.mark.parametrize(
    ("name", "content"),
    [("x.jsonl", '{"body": "no text"}\n'), ("y.jsonl", "not json\n"), ("z.npy", "garbage")],
)
def test_unreadable_data_is_a_422(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)

    with pytest.raises(InvalidRequest):
        read_tokens(DatasetSpec(path=str(tmp_path / name)), ByteTokenizer())


def test_batches_are_deterministic_and_ranks_disjoint() -> None:
    tokens = torch.arange(1000)
    ranks = [TokenBatches(tokens, 9, r, 3, seed=5) for r in range(3)]

    assert torch.equal(ranks[0].batch(4, 6), TokenBatches(tokens, 9, 0, 3, seed=5).batch(4, 6))
    firsts = [set(b.batch(0, 30)[:, 0].tolist()) for b in ranks]
    assert not firsts[0] & firsts[1] and not firsts[1] & firsts[2]
    assert ranks[0].batch(0, 2).shape == (2, 10)


def test_too_little_data_is_a_422() -> None:
    with pytest.raises(InvalidRequest, match="too few"):
        TokenBatches(torch.arange(20), 16, 1, 2, seed=0)


def test_eval_split_is_the_tail() -> None:
    train, held = split_eval(torch.arange(100), 0.1, 8)

    assert held.tolist() == list(range(90, 100)) and train.numel() == 90
    assert eval_windows(held, 8).shape == (1, 9)


def test_bad_model_configs_are_422() -> None:
    with pytest.raises(InvalidRequest):
        build_model(ModelSpec(config={"model_type": "no-such-model"}), 0)
    with pytest.raises(InvalidRequest):
        build_model(ModelSpec(path="/nonexistent"), 0)
    with pytest.raises(ValueError):
        ModelSpec(path="x", config={})


def test_a_local_model_dir_with_its_tokenizer(tmp_path: Path) -> None:
    words = ["<unk>", "<pad>", "the", "cat", "sat"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(tmp_path)
    build_model(ModelSpec(config={**TINY_LLAMA, "vocab_size": 5}), 0).save_pretrained(tmp_path)

    spec = ModelSpec(path=str(tmp_path))
    model = build_model(spec, 0)
    assert load_tokenizer(spec, model)("the cat sat") == [2, 3, 4]
    small = build_model(ModelSpec(config={**TINY_LLAMA, "vocab_size": 100}), 0)
    with pytest.raises(InvalidRequest, match="vocab_size"):
        load_tokenizer(ModelSpec(config={}), small)


def test_the_same_seed_builds_the_same_weights() -> None:
    first = build_model(ModelSpec(config=TINY_LLAMA), 3).state_dict()
    second = build_model(ModelSpec(config=TINY_LLAMA), 3).state_dict()

    assert all(torch.equal(first[k], second[k]) for k in first)


def test_checkpoints_roundtrip_keep_the_newest_and_load_as_a_model(tmp_path: Path) -> None:
    model = build_model(ModelSpec(config=TINY_LLAMA), 0)
    params = {n: p.detach() for n, p in model.named_parameters()}
    for r in (1, 2, 3):
        checkpoint = Checkpoint(
            round=r,
            inner_step=r * 5,
            params=params,
            momentum={"m": torch.full((2,), float(r))},
            residuals={"m": torch.ones(2)},
            optimizer={"w::step": torch.tensor(3.0)},
            meta={"task_id": "t"},
        )
        save_checkpoint(tmp_path, checkpoint, model.config.to_dict(), keep=2)
    (tmp_path / ".tmp-round-000009").mkdir()

    assert [p.name for p in list_checkpoints(tmp_path)] == ["round-000002", "round-000003"]
    latest = load_latest(tmp_path)
    assert latest is not None and latest.round == 3 and latest.inner_step == 15
    assert float(latest.momentum["m"][0]) == 3.0 and latest.meta["task_id"] == "t"
    assert torch.equal(latest.residuals["m"], torch.ones(2))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "round-000003")
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert json.loads((tmp_path / "round-000003" / "state.json").read_text())["round"] == 3
    assert load_latest(tmp_path / "empty") is None


def test_legacy_env_is_mapped_onto_the_request() -> None:
    body = LegacyTrainBody(
        train_config={
            "model": {"config": TINY_LLAMA},
            "dataset": {"path": "c.txt"},
            "peers": [{"peer_id": "a", "rank": 0}],
        },
        train_env={
            "rank": "1",
            "WORLD_SIZE": 2,
            "MASTER_ADDR": "10.1.1.1",
            "MASTER_PORT": "29500",
            "TASK_ID": "job-7",
        },
    )

    request = from_legacy(body)

    assert (request.rank, request.world_size, request.task_id) == (1, 2, "job-7")
    assert request.master_addr == "10.1.1.1:29500"


def test_legacy_bad_rank_is_a_422() -> None:
    with pytest.raises(InvalidRequest, match="RANK"):
        from_legacy(LegacyTrainBody(train_config={}, train_env={"RANK": "one"}))
