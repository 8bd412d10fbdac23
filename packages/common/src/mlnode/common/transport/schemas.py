"""REST bodies of the identity and known-peer routes."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from mlnode.common.transport.auth import decode_public_key, encode_key, fingerprint
from mlnode.common.transport.peers import Peer, check_address, check_peer_id

#: Bounds on request lists, so a body of a million elements is refused before they are validated.
MAX_PEERS = 10_000
MAX_TASKS = 1024


class IdentityResponse(BaseModel):
    """This node's public identity."""

    public_key: str = Field(description="Ed25519 public key, base64 (32 bytes).")
    fingerprint: str = Field(description="Short SHA-256 fingerprint of the key, for humans.")


class PeerFields(BaseModel):
    """A peer's key, address and tasks (the body of PUT /peers/{peer_id})."""

    public_key: str = Field(description="The peer's Ed25519 public key, base64 (32 bytes).")
    address: str | None = Field(
        None, description="host:port of the peer's gRPC transport; null if it is never called."
    )
    tasks: list[str] | None = Field(
        None,
        max_length=MAX_TASKS,
        description="Tasks the peer may exchange tensors for; null for any task.",
    )

    @field_validator("public_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        return encode_key(decode_public_key(value))

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        return check_address(value) if value else None

    @field_validator("tasks")
    @classmethod
    def _valid_tasks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not t or len(t) > 256 for t in value):
            raise ValueError("each task must be 1-256 characters")
        return value

    def to_peer(self, peer_id: str) -> Peer:
        """The checked peer entry."""
        tasks = frozenset(self.tasks) if self.tasks is not None else None
        return Peer(peer_id, decode_public_key(self.public_key), self.address, tasks)


class PeerUpdate(PeerFields):
    """Body of PUT /peers/{peer_id}; `peer_id` may be omitted, else it must match the path."""

    peer_id: str | None = Field(None, description="The peer's id; must equal the path's if given.")


class PeerModel(PeerFields):
    """One known peer."""

    peer_id: str = Field(description="The network's id of the peer (1-128 of A-Z a-z 0-9 ._:@-).")
    fingerprint: str | None = Field(
        None, description="Short fingerprint of the public key (ignored on input)."
    )

    @field_validator("peer_id")
    @classmethod
    def _valid_peer_id(cls, value: str) -> str:
        return check_peer_id(value)

    @classmethod
    def of(cls, peer: Peer) -> PeerModel:
        """The REST form of a peer entry."""
        return cls(
            peer_id=peer.peer_id,
            public_key=encode_key(peer.public_key),
            address=peer.address,
            tasks=sorted(peer.tasks) if peer.tasks is not None else None,
            fingerprint=fingerprint(peer.public_key),
        )


class PeerSet(BaseModel):
    """The whole set of known peers (GET and PUT /peers)."""

    peers: list[PeerModel] = Field(max_length=MAX_PEERS, description="Every known peer.")


class ProbeRequest(BaseModel):
    """Body of POST /peers/{peer_id}/probe."""

    task: str = Field(min_length=1, max_length=256, description="Task to send the probe under.")
    tag: str = Field("probe", max_length=256, description="Tag to send the probe under.")
    nbytes: int = Field(
        1024, ge=0, le=256 * 1024 * 1024, description="Random bytes to send (at most 256 MiB)."
    )


class ProbeResponse(BaseModel):
    """What a probe sent, as the peer's inbox will show it."""

    peer_id: str = Field(description="The probed peer.")
    task: str = Field(description="Task the probe was sent under.")
    tag: str = Field(description="Tag the probe was sent under.")
    nbytes: int = Field(description="Bytes sent.")
    digest: str = Field(description="BLAKE3 hex digest of the probe tensor's bytes.")
    seconds: float = Field(description="Duration of the signed send, handshake included.")


class TensorSummaryModel(BaseModel):
    """One tensor waiting in the inbox."""

    name: str = Field(description="Tensor name.")
    dtype: str = Field(description="torch dtype name.")
    shape: list[int] = Field(description="Shape.")
    digest: str = Field(description="BLAKE3 hex digest of its bytes.")


class DeliveryModel(BaseModel):
    """One peer's verified delivery not yet taken by a service."""

    task: str = Field(description="Task it was sent under.")
    tag: str = Field(description="Tag it was sent under.")
    peer_id: str = Field(description="The sending peer.")
    tensors: list[TensorSummaryModel] = Field(description="The delivered tensors.")


class InboxResponse(BaseModel):
    """Deliveries waiting in the inbox."""

    deliveries: list[DeliveryModel] = Field(description="Every waiting delivery.")
