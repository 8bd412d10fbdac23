"""REST routes of the node's identity and known peers (mounted under /api/v1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Response

from mlnode.common.errors import InvalidRequest, NotFound
from mlnode.common.transport.auth import encode_key
from mlnode.common.transport.deps import TransportDep
from mlnode.common.transport.diagnostics import describe_inbox, probe_peer
from mlnode.common.transport.peers import PEER_ID_PATTERN
from mlnode.common.transport.schemas import (
    IdentityResponse,
    InboxResponse,
    PeerModel,
    PeerSet,
    PeerUpdate,
    ProbeRequest,
    ProbeResponse,
)

router = APIRouter(tags=["transport"])
T = TypeVar("T")
PeerIdPath = Annotated[str, Path(pattern=PEER_ID_PATTERN.pattern, description="The peer's id.")]


async def _change(fn: Callable[..., T], *args: object) -> T:
    """Run a peer-set change (it writes the peers file) off the loop; conflicts are 422."""
    try:
        return await asyncio.to_thread(fn, *args)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="public_key") from None


@router.get("/identity", operation_id="get_identity")
async def get_identity(transport: TransportDep) -> IdentityResponse:
    """This node's public key and its fingerprint."""
    identity = transport.identity
    return IdentityResponse(
        public_key=encode_key(identity.public_key), fingerprint=identity.fingerprint
    )


@router.get("/peers", operation_id="list_peers")
async def list_peers(transport: TransportDep) -> PeerSet:
    """Every known peer."""
    return PeerSet(peers=[PeerModel.of(p) for p in transport.peers.all()])


@router.put("/peers", operation_id="replace_peers")
async def replace_peers(body: PeerSet, transport: TransportDep) -> PeerSet:
    """Replace the whole peer set at once; removed or changed peers' sessions end."""
    await _change(transport.peers.replace, [p.to_peer(p.peer_id) for p in body.peers])
    return PeerSet(peers=[PeerModel.of(p) for p in transport.peers.all()])


@router.get("/peers/{peer_id}", operation_id="get_peer")
async def get_peer(peer_id: str, transport: TransportDep) -> PeerModel:
    """One known peer."""
    peer = transport.peers.get(peer_id)
    if peer is None:
        raise NotFound(f"peer {peer_id!r} is not known", param="peer_id")
    return PeerModel.of(peer)


@router.put("/peers/{peer_id}", operation_id="put_peer")
async def put_peer(peer_id: PeerIdPath, body: PeerUpdate, transport: TransportDep) -> PeerModel:
    """Add or replace one peer."""
    if body.peer_id not in (None, peer_id):
        raise InvalidRequest(f"body peer_id {body.peer_id!r} is not {peer_id!r}", param="peer_id")
    peer = body.to_peer(peer_id)
    await _change(transport.peers.put, peer)
    return PeerModel.of(peer)


@router.delete("/peers/{peer_id}", operation_id="delete_peer", status_code=204)
async def delete_peer(peer_id: str, transport: TransportDep) -> Response:
    """Forget a peer; its open sessions end."""
    if not await _change(transport.peers.remove, peer_id):
        raise NotFound(f"peer {peer_id!r} is not known", param="peer_id")
    return Response(status_code=204)


@router.post("/peers/{peer_id}/probe", operation_id="probe_peer")
async def probe(peer_id: str, body: ProbeRequest, transport: TransportDep) -> ProbeResponse:
    """Send random bytes to a peer over the signed transport: checks address, keys and task."""
    report = await asyncio.to_thread(
        probe_peer, transport, peer_id, body.task, body.tag, body.nbytes
    )
    return ProbeResponse(peer_id=peer_id, task=body.task, tag=body.tag, **vars(report))


@router.get("/transport/inbox", operation_id="get_inbox")
async def get_inbox(transport: TransportDep) -> InboxResponse:
    """Verified deliveries that no service has taken yet, with their digests."""
    deliveries = await asyncio.to_thread(describe_inbox, transport.inbox)
    return InboxResponse.model_validate({"deliveries": [asdict(d) for d in deliveries]})
