"""MLNODE_API_TOKEN_FILE: a token generated once, owner-only, shared by concurrent starters."""

from __future__ import annotations

import logging
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr

from mlnode.common.api_token import TokenFileError, create_token, read_token, use_token_file
from mlnode.common.settings import NodeSettings


def node(tmp_path: Path, **values: object) -> NodeSettings:
    return NodeSettings(_env_file=None, state_dir=tmp_path / "state", **values)  # type: ignore[arg-type]


def test_first_start_generates_a_private_token_and_later_starts_keep_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = node(tmp_path, api_token_file="api-token")
    with caplog.at_level(logging.INFO):
        path = use_token_file(first)
    assert path == tmp_path / "state" / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.api_token is not None
    token = first.api_token.get_secret_value()
    assert len(token) >= 32 and token not in caplog.text and str(path) in caplog.text
    again = node(tmp_path, api_token_file="api-token")
    use_token_file(again)
    assert again.api_token is not None and again.api_token.get_secret_value() == token
    assert [p.name for p in path.parent.iterdir() if "api-token" in p.name] == ["api-token"]


def test_a_set_token_wins_and_no_file_means_nothing_happens(tmp_path: Path) -> None:
    given = node(tmp_path, api_token=SecretStr("set"), api_token_file="api-token")
    assert use_token_file(given) is None and not (tmp_path / "state" / "api-token").exists()
    assert use_token_file(node(tmp_path)) is None


def test_concurrent_starters_agree_on_one_token(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "token"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: create_token(path), range(16)))
    assert made.count(True) == 1
    assert read_token(path)


def test_a_token_file_others_may_read_or_an_empty_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t\n")
    path.chmod(0o644)
    with pytest.raises(TokenFileError, match="readable by others"):
        read_token(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(TokenFileError, match="empty"):
        read_token(path)
