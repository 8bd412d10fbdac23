import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlnode.common.logging import JsonFormatter
from mlnode.common.settings import LogFormat, NodeSettings


def test_defaults_bind_loopback_and_keep_state_out_of_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = NodeSettings()
    assert settings.host == "127.0.0.1" and settings.port == 8080
    assert settings.api_token is None
    assert not str(settings.state_dir).startswith(str(tmp_path))


def test_environment_overrides_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MLNODE_PORT=9001\nMLNODE_LOG_FORMAT=json\nMLNODE_API_TOKEN=\n")
    assert NodeSettings().port == 9001
    monkeypatch.setenv("MLNODE_PORT", "9002")
    settings = NodeSettings()
    assert settings.port == 9002 and settings.log_format is LogFormat.JSON
    assert settings.api_token is None


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLNODE_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="unknown log level"):
        NodeSettings()
    monkeypatch.setenv("MLNODE_LOG_LEVEL", "debug")
    monkeypatch.setenv("MLNODE_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        NodeSettings()


def test_state_dir_is_created_owner_only(tmp_path: Path) -> None:
    settings = NodeSettings(state_dir=tmp_path / "a" / "state")
    path = settings.ensure_state_dir()
    assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700


def test_json_log_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("mlnode.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.task_id = "t1"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "hello you" and entry["level"] == "WARNING" and entry["task_id"] == "t1"
