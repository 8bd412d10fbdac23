"""The REST API token kept in a file: generated on first start, owner-only, never logged.

`MLNODE_API_TOKEN_FILE` names it (relative paths are under the state directory). When
`MLNODE_API_TOKEN` is unset, the node reads its token from there, creating the file with a fresh
random token (mode 0600) when it does not exist yet. The file is written under another name
and then linked into place, so a reader never sees half a token and two nodes starting at once
agree on one.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from mlnode.common.settings import NodeSettings

log = logging.getLogger(__name__)


class TokenFileError(Exception):
    """The token file exists but cannot be used."""


def token_path(node: NodeSettings) -> Path | None:
    """Where the token file is, or None when none is configured."""
    if node.api_token_file is None:
        return None
    path = node.api_token_file
    return path if path.is_absolute() else node.state_dir / path


def read_token(path: Path) -> str:
    """The token in `path`; `TokenFileError` when others may read it, or it is empty."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise TokenFileError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise TokenFileError(f"{path} is empty")
    return token


def create_token(path: Path) -> bool:
    """Write a fresh token to `path` unless one is there already; True when this call made it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        os.link(draft, path)
    except FileExistsError:
        return False
    finally:
        draft.unlink(missing_ok=True)
    return True


def use_token_file(node: NodeSettings) -> Path | None:
    """Give `node` the token of its token file (made on first start); the file's path, or None.

    Nothing happens when `MLNODE_API_TOKEN` is set or no file is configured.
    """
    path = token_path(node)
    if node.api_token is not None or path is None:
        return None
    if path.is_relative_to(node.state_dir):
        node.ensure_state_dir()
    if create_token(path):
        log.info("generated a REST API token in %s (clients send it as a bearer token)", path)
    else:
        log.info("REST API token read from %s", path)
    node.api_token = SecretStr(read_token(path))
    return path
