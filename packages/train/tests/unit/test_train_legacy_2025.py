"""The 2025-08 network node's training body: mapped, or a 422 naming what it lacks."""

from typing import Any

import pytest

from mlnode.common.errors import InvalidRequest
from mlnode.train.legacy import LegacyTrainBody, from_legacy

CONFIG_2025_08 = {
    "project": "p",
    "name": "n",
    "description": "",
    "group": "g",
    "tags": ["x"],
    "train": {"micro_bs": 2, "eval_interval": 10},
    "data": {"seq_length": 64},
    "optim": {
        "sched_type": "cosine",
        "batch_size": 8,
        "warmup_steps": 1,
        "total_steps": 10,
        "adam_betas1": 0.9,
        "adam_betas2": 0.95,
        "weight_decay": 0.05,
        "lr": 0.001,
    },
    "diloco": {"inner_steps": 5},
    "ckpt": {"interval": 1, "topk": 3, "path": "ckpt"},
}
ENV_2025_08 = {
    "TASK_ID": "42",
    "NODE_ID": "node-1",
    "STORE_API_URL": "http://127.0.0.1:1",
    "GLOBAL_ADDR": "10.0.0.1",
    "GLOBAL_PORT": "29500",
    "GLOBAL_RANK": "1",
    "GLOBAL_UNIQUE_ID": "u",
    "GLOBAL_WORLD_SIZE": "2",
    "BASE_PORT": "10000",
}


def test_the_2025_08_body_alone_is_refused_naming_what_it_lacks() -> None:
    with pytest.raises(InvalidRequest) as info:
        from_legacy(LegacyTrainBody(train_config=CONFIG_2025_08, train_env=ENV_2025_08))
    message = info.value.message
    assert "model: Field required" in message and "dataset.path: Field required" in message
    assert "2025-08 body carries no model, data file or peers" in message
    assert "project" not in message.split("(")[1].split(";")[0], "labels are not reported"


def test_the_2025_08_body_with_model_data_and_peers_is_mapped() -> None:
    config = {
        **CONFIG_2025_08,
        "model": {"config": {"hidden_size": 64}},
        "dataset": {"path": "corpus.txt"},
        "peers": [{"peer_id": "a", "rank": 0}],
    }
    request = from_legacy(LegacyTrainBody(train_config=config, train_env=ENV_2025_08))
    assert (request.task_id, request.rank, request.world_size) == ("42", 1, 2)
    assert request.master_addr == "10.0.0.1:29500"
    assert (request.optim.lr, request.optim.weight_decay, request.optim.batch_size) == (
        0.001,
        0.05,
        8,
    )
    assert (request.optim.micro_batch_size, request.optim.total_steps) == (2, 10)
    assert request.dataset.seq_len == 64 and request.diloco.inner_steps == 5
    assert (request.checkpoint.dir, request.checkpoint.keep) == ("ckpt", 3)


def test_a_missing_peer_for_world_size_two_is_named() -> None:
    config = {**CONFIG_2025_08, "model": {"config": {}}, "dataset": {"path": "c.txt"}}
    with pytest.raises(InvalidRequest, match="peers must name every other rank"):
        from_legacy(LegacyTrainBody(train_config=config, train_env=ENV_2025_08))


def test_a_bad_global_rank_is_named() -> None:
    with pytest.raises(InvalidRequest, match="GLOBAL_RANK"):
        from_legacy(LegacyTrainBody(train_config={}, train_env={"GLOBAL_RANK": "one"}))


@pytest.mark.parametrize("optim", [5, "x", [1], None])
def test_an_optim_of_another_type_is_a_422(optim: object) -> None:
    with pytest.raises(InvalidRequest):
        from_legacy(LegacyTrainBody(train_config={"optim": optim}, train_env={}))


def test_dropped_keys_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    forged = "x\nCRITICAL forged line"
    optim: dict[str, Any] = {**CONFIG_2025_08["optim"], forged: 1}  # type: ignore[dict-item]
    config: dict[str, Any] = {**CONFIG_2025_08, "optim": optim}
    config["train"] = {f"k{i}": i for i in range(100)}
    with caplog.at_level("INFO"), pytest.raises(InvalidRequest):
        from_legacy(LegacyTrainBody(train_config=config, train_env=ENV_2025_08))
    (record,) = [r for r in caplog.records if "no counterpart" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "\\n" in message
    assert "k99" not in message and "keys (ignored)" in message
