"""The memory estimate of a training request, judged before any model is built."""

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from mlnode.common.errors import InvalidRequest
from mlnode.train.schemas import TrainRequest
from mlnode.train.sizing import build_config, check_request_fits, config_sizes, count_params

GIB = 1 << 30
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "vocab_size": 256,
    "num_attention_heads": 4,
}


def request(tmp_path: Path, config: dict[str, Any] | None = None, **extra) -> TrainRequest:
    data = tmp_path / "corpus.txt"
    data.write_text("hello world " * 100)
    body = {
        "task_id": "t",
        "model": {"config": TINY if config is None else config},
        "dataset": {"path": str(data), "seq_len": 32},
        **extra,
    }
    return TrainRequest.model_validate(body)


def real_params(config: dict[str, Any]) -> int:
    model = AutoModelForCausalLM.from_config(build_config(config, "model.config"))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        {**TINY, "num_key_value_heads": 2, "tie_word_embeddings": True},
        {
            "model_type": "gpt2",
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "vocab_size": 256,
            "n_positions": 128,
        },
        {"model_type": "qwen3", **TINY, "head_dim": 32},
    ],
)
def test_analytic_count_is_close_to_the_real_model(config: dict[str, Any]) -> None:
    built = build_config(config, "model.config")
    analytic = sum(count_params(config_sizes(built, "model.config")).values())
    real = real_params(config)
    assert real * 0.85 <= analytic <= real * 1.6


def test_tiny_model_fits_and_is_counted_exactly(tmp_path: Path) -> None:
    found = check_request_fits(request(tmp_path), 4 * GIB)
    assert found is not None and found.params == real_params(TINY)


def test_default_config_is_a_7b_model_and_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(request(tmp_path, {}), 16 * GIB)
    assert refused.value.param is not None and refused.value.param.startswith("model.config")
    assert "MLNODE_TRAIN_MAX_MEMORY_BYTES" in refused.value.message


@pytest.mark.parametrize(
    ("config", "param"),
    [
        (
            {**TINY, "num_hidden_layers": 10_000_000, "hidden_size": 8},
            "model.config.num_hidden_layers",
        ),
        ({**TINY, "vocab_size": 2_000_000_000}, "model.config.vocab_size"),
        ({**TINY, "intermediate_size": 10**9}, "model.config.intermediate_size"),
        (
            {**TINY, "num_local_experts": 10**6, "model_type": "mixtral"},
            "model.config.num_hidden_layers",
        ),
    ],
)
def test_huge_configs_are_refused_naming_the_field(
    tmp_path: Path, config: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(request(tmp_path, config), 4 * GIB)
    assert refused.value.param in (param, "model.config.intermediate_size")


def test_long_sequences_count_their_activations(tmp_path: Path) -> None:
    data = tmp_path / "c.txt"
    data.write_text("x")
    body = {
        "task_id": "t",
        "model": {"config": TINY},
        "dataset": {"path": str(data), "seq_len": 65536},
        "optim": {"batch_size": 64},
    }
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(TrainRequest.model_validate(body), 4 * GIB)
    assert refused.value.param == "dataset.seq_len"


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ({**TINY, "hidden_size": "abc"}, "model.config.hidden_size"),
        ({**TINY, "num_hidden_layers": -1}, "model.config.num_hidden_layers"),
        ({**TINY, "vocab_size": 1.5}, "model.config.vocab_size"),
        ({"model_type": "no-such-model"}, "model.config"),
        ({"model_type": 7}, "model.config.model_type"),
    ],
)
def test_malformed_configs_are_422(tmp_path: Path, config: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(request(tmp_path, config), 4 * GIB)
    assert refused.value.param == param


def test_dataset_must_be_a_regular_file(tmp_path: Path) -> None:
    body = {"task_id": "t", "model": {"config": TINY}, "dataset": {"path": "/dev/zero"}}
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(TrainRequest.model_validate(body), 4 * GIB)
    assert refused.value.param == "dataset.path" and "regular file" in refused.value.message


def test_model_directory_is_judged_by_its_config(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 4000}')
    data = tmp_path / "c.txt"
    data.write_text("x")
    body = {"task_id": "t", "model": {"path": str(model_dir)}, "dataset": {"path": str(data)}}
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(TrainRequest.model_validate(body), 4 * GIB)
    assert refused.value.param == "model.path"
    assert torch.get_default_device().type == "cpu"


def test_deep_models_are_refused_before_they_are_built(tmp_path: Path) -> None:
    deep = {**TINY, "num_hidden_layers": 60_000, "hidden_size": 8, "intermediate_size": 8}
    with pytest.raises(InvalidRequest) as refused:
        check_request_fits(request(tmp_path, deep), 64 * GIB)
    assert refused.value.param == "model.config.num_hidden_layers"
    assert "MLNODE_TRAIN_MAX_LAYERS" in refused.value.message
    check_request_fits(request(tmp_path, {**deep, "num_hidden_layers": 4}), 64 * GIB, 4)
