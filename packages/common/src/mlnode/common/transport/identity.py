"""The node's key pair on disk: created on first start (mode 0600), reused afterwards."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from mlnode.common.transport.auth import KEY_BYTES, Identity

log = logging.getLogger(__name__)

KEY_FILE = "identity.key"


class IdentityFileError(RuntimeError):
    """The key file exists but cannot be used safely."""


def load_or_create_identity(path: Path) -> Identity:
    """Read the key pair at `path`, or create it there (owner-only) when absent."""
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    identity = Identity.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile: use theirs
        return _load(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(identity.seed).decode("ascii") + "\n")
    log.info("created node identity %s in %s", identity.fingerprint, path)
    return identity


def _load(path: Path) -> Identity:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IdentityFileError(
            f"{path} is readable by others (mode {mode:o}); run 'chmod 600 {path}'"
        )
    text = path.read_text().strip()
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityFileError(f"{path} does not hold a base64 key") from None
    if len(seed) != KEY_BYTES:
        raise IdentityFileError(f"{path} holds {len(seed)} bytes, expected {KEY_BYTES}")
    return Identity.from_seed(seed)
