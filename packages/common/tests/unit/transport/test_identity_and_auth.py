import base64
import os
import stat
from pathlib import Path

import pytest

from mlnode.common.transport import auth
from mlnode.common.transport.identity import IdentityFileError, load_or_create_identity


def test_identity_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.key"
    first = load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_identity(path)
    assert again.public_key == first.public_key
    assert len(first.public_key) == auth.KEY_BYTES


def test_identity_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    load_or_create_identity(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityFileError, match="chmod 600"):
        load_or_create_identity(path)


def test_corrupt_identity_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_text("not base64!")
    path.chmod(0o600)
    with pytest.raises(IdentityFileError):
        load_or_create_identity(path)


def test_signatures_verify_only_for_their_key_and_message() -> None:
    me, other = auth.Identity.generate(), auth.Identity.generate()
    sig = me.sign(b"hello")
    assert auth.verify(me.public_key, b"hello", sig)
    assert not auth.verify(other.public_key, b"hello", sig)
    assert not auth.verify(me.public_key, b"hellO", sig)
    assert not auth.verify(me.public_key, b"hello", sig[:-1])


def test_signed_messages_are_domain_separated() -> None:
    session = b"s" * 32
    assert auth.trailer_message(session, 0, b"h", b"d") != auth.trailer_message(
        session, 1, b"h", b"d"
    )
    assert auth.end_message(session, 1, "a") != auth.end_message(session, 1, "b")
    # length prefixes: moving a byte between parts changes the message
    assert auth.trailer_message(session, 0, b"ab", b"c") != auth.trailer_message(
        session, 0, b"a", b"bc"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not base64!!", "base64"),
        (base64.b64encode(b"short").decode(), "32 bytes"),
        ("", "32 bytes"),
    ],
)
def test_malformed_public_keys_are_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        auth.decode_public_key(text)


def test_fingerprint_is_short_and_stable() -> None:
    key = auth.Identity.from_seed(b"\1" * 32)
    assert key.fingerprint == auth.fingerprint(key.public_key)
    assert len(key.fingerprint) == 19
