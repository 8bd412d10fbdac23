"""The fake engine loads the project's endpoint plugins as vLLM does (VLLM_PLUGINS, worker ext)."""

import pytest

from mlnode.infer.args import plugin_env, with_plugin_args
from mlnode.infer.testing.fake_engine import FakeEngine, parse_args
from mlnode.infer.testing.plugin_host import endpoint_plugins

STATUS = {"type": "http", "method": "GET", "path": "/api/v1/pow/status", "root_path": ""}


def test_only_the_plugins_vllm_plugins_names_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    assert endpoint_plugins() == []
    monkeypatch.setenv("VLLM_PLUGINS", plugin_env({})["VLLM_PLUGINS"])
    loaded = endpoint_plugins()
    assert loaded and all(callable(p.attach_router) for p in loaded)


def test_routes_attach_only_with_the_project_worker_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_PLUGINS", plugin_env({})["VLLM_PLUGINS"])
    bare = FakeEngine(parse_args(["--model", "m"]))
    assert not bare.plugins.serves(dict(STATUS))
    configured = FakeEngine(parse_args(list(with_plugin_args(["--model", "m"]))))
    assert configured.plugins.serves(dict(STATUS))
    assert not configured.plugins.serves({**STATUS, "path": "/v1/models"})
