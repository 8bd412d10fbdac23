"""PowSettings from the environment, as `.env.template` writes them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlnode.pow.v1.settings import PowSettings


def test_template_values_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLNODE_POW_CPU_THREADS", "")
    monkeypatch.setenv("MLNODE_POW_DEVICE", "cpu")
    monkeypatch.setenv("MLNODE_POW_CALLBACK_BACKOFF_MAX_S", "2.5")
    settings = PowSettings(_env_file=None)
    assert settings.cpu_threads is None
    assert settings.device == "cpu"
    assert settings.callback_backoff_max_s == 2.5


def test_unknown_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLNODE_POW_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        PowSettings(_env_file=None)
