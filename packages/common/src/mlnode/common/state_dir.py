"""The state directory must be ours alone: keys and known peers decide whom the node trusts.

A directory (or a file in it) that another user owns or may write could hold a planted
`peers.json` or `identity.key`; the node refuses to start with it rather than fixing the mode
and trusting what is already there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class StateDirError(RuntimeError):
    """The state directory or one of its files is not private to this user."""


def check_private(path: Path) -> None:
    """StateDirError unless `path` is owned by this user and writable by nobody else.

    Files must not be symbolic links (a link could point anywhere the attacker likes).
    """
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        if path.is_dir():  # a linked state directory is an operator's choice: check its target
            info = path.stat()
        else:
            raise StateDirError(f"{path} is a symbolic link; the node keeps real files there")
    uid = os.geteuid()
    if info.st_uid != uid:
        raise StateDirError(
            f"{path} is owned by uid {info.st_uid}, not this user ({uid}): another user could "
            "have planted it; check it, then chown it or use another MLNODE_STATE_DIR"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise StateDirError(
            f"{path} may be written by other users (mode {mode:o}): someone could have planted "
            f"keys or peers; check it, then 'chmod go-w {path}'"
        )


def ensure_private_dir(path: Path, files: tuple[str, ...] = ()) -> Path:
    """Create `path` (mode 0700) or check the existing one and the named files in it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private(path)
    for name in files:
        if os.path.lexists(path / name):
            check_private(path / name)
    return path
