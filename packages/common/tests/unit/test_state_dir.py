import os
from pathlib import Path

import pytest

from mlnode.common.state_dir import StateDirError, check_private, ensure_private_dir


def test_a_new_state_dir_is_private(tmp_path: Path) -> None:
    state = ensure_private_dir(tmp_path / "a" / "state")
    assert state.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_dir_others_may_write_is_refused_not_fixed(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(StateDirError, match="may be written by other users"):
        ensure_private_dir(state)
    assert state.stat().st_mode & 0o777 == mode


def test_planted_files_are_refused(tmp_path: Path) -> None:
    state = ensure_private_dir(tmp_path / "state")
    (state / "peers.json").write_text("{}")
    (state / "peers.json").chmod(0o666)
    with pytest.raises(StateDirError, match="peers.json may be written"):
        ensure_private_dir(state, ("identity.key", "peers.json"))
    (state / "peers.json").unlink()
    os.symlink(tmp_path / "elsewhere", state / "peers.json")
    with pytest.raises(StateDirError, match="symbolic link"):
        ensure_private_dir(state, ("peers.json",))


def test_a_readable_dir_of_ours_is_fine(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    check_private(state)
    linked = tmp_path / "link"
    linked.symlink_to(state)  # a linked state dir is checked at its target
    check_private(linked)
