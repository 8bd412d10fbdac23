"""Errors of the tensor transport, each with the gRPC status name the server answers with.

Callers of `send` / `fetch` see these typed errors (rendered by the API like any `MLNodeError`);
the servicer maps them to status codes, so an open stream reports its failure in-band.
"""

from __future__ import annotations

from typing import ClassVar

from mlnode.common.errors import InvalidRequest, MLNodeError, PeerUnknown, Unavailable


class TransportError(MLNodeError):
    """A transfer failed; the message says why."""

    status_code = 502
    code = "transport_error"
    grpc_status: ClassVar[str] = "INTERNAL"


class NotAuthenticated(PeerUnknown):
    """A key is unknown, not registered for the task, or failed its challenge."""

    grpc_status: ClassVar[str] = "UNAUTHENTICATED"


class SessionRevoked(PeerUnknown):
    """The peer was removed or changed while its session was open."""

    grpc_status: ClassVar[str] = "UNAUTHENTICATED"


class ImpostorPeer(TransportError):
    """The remote end does not hold the key of the peer we meant to reach."""

    code = "impostor_peer"
    grpc_status = "UNAUTHENTICATED"


class IntegrityError(TransportError):
    """Frames were tampered with, truncated, reordered, duplicated or malformed."""

    code = "integrity_error"
    grpc_status = "DATA_LOSS"


class MalformedFrame(IntegrityError):
    """A frame announces something impossible (unknown dtype, absurd shape, wrong size)."""

    code = "malformed_frame"
    grpc_status = "INVALID_ARGUMENT"


class ListingMismatch(IntegrityError):
    """A fetched tensor's header differs from what the peer listed."""

    code = "listing_mismatch"
    grpc_status = "INVALID_ARGUMENT"


class LimitExceeded(InvalidRequest):
    """A tensor or a set of tensors is over a configured limit."""

    grpc_status: ClassVar[str] = "RESOURCE_EXHAUSTED"


class NotOffered(TransportError):
    """The peer offers no provider for the task, or not the named tensors."""

    status_code = 404
    code = "not_offered"
    grpc_status = "NOT_FOUND"


class FetchCancelled(TransportError):
    """The caller cancelled a fetch in progress (e.g. its job was stopped)."""

    code = "fetch_cancelled"
    grpc_status = "CANCELLED"


class PeerUnreachable(Unavailable):
    """The peer's address does not answer."""

    grpc_status: ClassVar[str] = "UNAVAILABLE"


class TransportClosed(Unavailable):
    """The transport is not open (the node is starting or stopping)."""

    grpc_status: ClassVar[str] = "UNAVAILABLE"
