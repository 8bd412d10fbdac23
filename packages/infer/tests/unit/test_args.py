import pytest

from mlnode.common.errors import InvalidRequest
from mlnode.infer.args import parse_additional_args
from mlnode.infer.schemas import InferenceUpRequest


@pytest.mark.parametrize(
    "args",
    [
        ["--tensor-parallel-size", "2"],
        ["--tensor-parallel-size=2"],
        ["--tensor_parallel_size", "2"],
        ["-tp", "2"],
        ["-tp=2"],
        ["--tensor-parallel-size 2"],
        ["--max-model-len", "512", "-tp", "2", "--enforce-eager"],
        ["--tensor-parallel", "2"],
    ],
)
def test_tensor_parallel_size_in_every_spelling(args: list[str]) -> None:
    parsed = parse_additional_args(args)
    assert parsed.tensor_parallel_size == 2
    assert parsed.pipeline_parallel_size == 1
    assert parsed.devices_per_instance == 2


@pytest.mark.parametrize(
    "args", [["--pipeline-parallel-size", "3"], ["-pp=3"], ["--pipeline_parallel_size=3"]]
)
def test_pipeline_parallel_size(args: list[str]) -> None:
    parsed = parse_additional_args(["-tp", "2", *args])
    assert (parsed.tensor_parallel_size, parsed.pipeline_parallel_size) == (2, 3)
    assert parsed.devices_per_instance == 6


def test_defaults_and_args_kept_in_order() -> None:
    parsed = parse_additional_args(["--max-model-len 512", "--enforce-eager"])
    assert parsed.devices_per_instance == 1
    assert parsed.args == ("--max-model-len", "512", "--enforce-eager")


@pytest.mark.parametrize(
    "args",
    [
        ["--host", "0.0.0.0"],
        ["--port=9000"],
        ["--port", "9000"],
        ["--model", "other"],
        ["--enforce-eager", "--host 0.0.0.0"],
        ["--hos=0.0.0.0"],
        ["--por", "1"],
    ],
)
def test_node_owned_flags_are_refused(args: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_additional_args(args)
    assert info.value.status_code == 422
    assert "may not appear" in info.value.message


@pytest.mark.parametrize(
    "args", [["-tp", "0"], ["-tp", "two"], ["--tensor-parallel-size"], ["-pp=-1"]]
)
def test_bad_sizes_are_refused(args: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_additional_args(args)
    assert args[0].split("=")[0] in info.value.message


def test_value_that_looks_like_a_flag_value_is_not_a_flag() -> None:
    parsed = parse_additional_args(["--served-model-name", "host", "--chat-template", "x y"])
    assert parsed.args[-1] == "x y"


def test_up_request_is_lenient_with_null_and_numbers() -> None:
    assert InferenceUpRequest(model="m", additional_args=None).additional_args == []
    request = InferenceUpRequest.model_validate(
        {"model": "m", "additional_args": ["--max-model-len", 512], "extra": 1}
    )
    assert request.additional_args == ["--max-model-len", "512"]
    assert request.dtype == "auto"
