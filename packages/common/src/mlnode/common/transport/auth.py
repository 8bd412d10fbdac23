"""Ed25519 identities, fresh challenges and the exact byte strings each side signs.

Pure: no grpc. Every signed message starts with its own domain label and length-prefixes its
parts, so a signature made for one purpose (or one session) is never valid for another.
Large payloads are hashed first and only the digest is signed (hash-then-sign).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 32
DIGEST_BYTES = 32


class Identity:
    """This node's Ed25519 key pair; injected where needed, never a process global."""

    def __init__(self, signing_key: SigningKey) -> None:
        self._key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random key pair."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The key pair of a 32-byte seed."""
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The private seed (write it only to a 0600 file)."""
        return bytes(self._key)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached signature."""
        return self._key.sign(message).signature

    @property
    def fingerprint(self) -> str:
        """Short, human-comparable name of the public key."""
        return fingerprint(self.public_key)


def fingerprint(public_key: bytes) -> str:
    """First 8 bytes of SHA-256 of the key, as hex in groups of four."""
    digest = hashlib.sha256(public_key).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s signature of `message`."""
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def decode_public_key(text: str) -> bytes:
    """A base64 Ed25519 public key as bytes; ValueError names what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public_key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"public_key must be {KEY_BYTES} bytes, got {len(raw)}")
    try:
        VerifyKey(raw)
    except Exception:
        raise ValueError("public_key is not an Ed25519 key") from None
    return raw


def encode_key(public_key: bytes) -> str:
    """Base64 text of a public key."""
    return base64.b64encode(public_key).decode("ascii")


def new_nonce() -> bytes:
    """A fresh random challenge."""
    return os.urandom(NONCE_BYTES)


def _pack(label: bytes, *parts: bytes) -> bytes:
    out = [label]
    for part in parts:
        out.append(struct.pack(">I", len(part)))
        out.append(part)
    return b"".join(out)


def server_hello_message(
    client_key: bytes, server_key: bytes, task: str, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    """What the server signs to answer the client's challenge."""
    return _pack(
        b"mlnode/v1/server-hello",
        client_key,
        server_key,
        task.encode(),
        client_nonce,
        server_nonce,
    )


def client_proof_message(
    client_key: bytes,
    server_key: bytes,
    task: str,
    client_nonce: bytes,
    server_nonce: bytes,
    method: str,
) -> bytes:
    """What the client signs to answer the server's challenge for one call of `method`."""
    return _pack(
        b"mlnode/v1/client-proof",
        client_key,
        server_key,
        task.encode(),
        client_nonce,
        server_nonce,
        method.encode(),
    )


def session_id(client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The session both challenges define; every later signature names it."""
    return hashlib.sha256(_pack(b"mlnode/v1/session", client_nonce, server_nonce)).digest()


def push_session(session: bytes, index: int) -> bytes:
    """The session push `index` of a push stream is signed under: each push keeps its own."""
    return hashlib.sha256(_pack(b"mlnode/v1/push", session, struct.pack(">I", index))).digest()


def bundle_message(session: bytes, first: int, headers: list[bytes], digest: bytes) -> bytes:
    """What the sender signs for a bundle of tensors `first`, `first + 1`, ... of a stream."""
    return _pack(
        b"mlnode/v1/bundle",
        session,
        struct.pack(">II", first, len(headers)),
        digest,
        *headers,
    )


def trailer_message(session: bytes, sequence: int, header: bytes, digest: bytes) -> bytes:
    """What the sender signs after a tensor's payload."""
    return _pack(b"mlnode/v1/trailer", session, struct.pack(">I", sequence), header, digest)


def end_message(session: bytes, count: int, tag: str) -> bytes:
    """What the sender signs to close a stream of `count` tensors."""
    return _pack(b"mlnode/v1/end", session, struct.pack(">I", count), tag.encode())


def listing_message(session: bytes, listing: bytes) -> bytes:
    """What the server signs over its list of offered tensors."""
    return _pack(b"mlnode/v1/listing", session, hashlib.sha256(listing).digest())
