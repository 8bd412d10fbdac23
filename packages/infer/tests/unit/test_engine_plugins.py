"""What infer adds to every engine so the project's vLLM plugins load (PoC v2 routes)."""

import pytest

from mlnode.infer.args import (
    plugin_env,
    project_plugin_names,
    project_worker_extension,
    with_plugin_args,
)


def test_the_published_worker_extension_is_pows() -> None:
    # By value: infer names no pow module itself, it reads what mlnode-pow publishes.
    assert project_worker_extension() == "mlnode.pow.engine.worker.PocWorkerExtension"


def test_the_worker_extension_is_added_unless_the_operator_set_one() -> None:
    assert with_plugin_args(["--enforce-eager"]) == (
        "--enforce-eager",
        "--worker-extension-cls",
        project_worker_extension(),
    )
    for own in (["--worker-extension-cls", "a.B"], ["--worker_extension_cls=a.B"]):
        assert with_plugin_args(own) == tuple(own)


def test_the_project_plugins_are_found_through_their_entry_points() -> None:
    assert "mlnode_pow" in project_plugin_names()


@pytest.mark.parametrize(
    ("current", "expected_prefix"),
    [(None, []), ("", []), ("theirs", ["theirs"]), ("mlnode_pow,theirs", ["mlnode_pow", "theirs"])],
)
def test_vllm_plugins_keeps_what_is_set_and_adds_ours(
    current: str | None, expected_prefix: list[str]
) -> None:
    env = {} if current is None else {"VLLM_PLUGINS": current}
    names = plugin_env(env).get("VLLM_PLUGINS", current or "").split(",")
    assert names[: len(expected_prefix)] == expected_prefix
    assert set(project_plugin_names()) <= set(names)
    assert len(names) == len(set(names))
