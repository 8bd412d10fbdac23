"""How many local ranks a node runs and what share of the batch each takes (no processes)."""

import pytest
import torch
from pydantic import ValidationError

from mlnode.common.errors import InvalidRequest
from mlnode.train.local import local_optim
from mlnode.train.schemas import OptimConfig
from mlnode.train.settings import TrainSettings

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("value", "devices"),
    [("auto", [CPU]), ("1", [CPU]), ("3", [CPU, CPU, CPU])],
)
def test_local_devices_on_cpu(value: str, devices: list[torch.device]) -> None:
    assert TrainSettings(device="cpu", local_devices=value).local_device_list() == devices


def test_local_devices_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MLNODE_TRAIN_LOCAL_DEVICES", "2")

    assert TrainSettings(device="cpu").local_device_list() == [CPU, CPU]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1,1", "0,"])
def test_malformed_local_devices_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="local_devices"):
        TrainSettings(local_devices=value)


def test_a_gpu_list_needs_cuda() -> None:
    with pytest.raises(InvalidRequest, match="training is on CPU"):
        TrainSettings(device="cpu", local_devices="0,1").local_device_list()


@pytest.mark.parametrize(
    ("batch", "micro", "share", "share_micro"),
    [(8, 4, 4, 4), (8, None, 4, 4), (12, 4, 6, 2), (8, 8, 4, 4)],
)
def test_each_local_rank_takes_an_equal_share(batch, micro, share, share_micro) -> None:
    optim = OptimConfig(batch_size=batch, micro_batch_size=micro)

    mine = local_optim(optim, 2)

    assert (mine.batch_size, mine.micro_batch_size) == (share, share_micro)
    assert local_optim(optim, 1) is optim
