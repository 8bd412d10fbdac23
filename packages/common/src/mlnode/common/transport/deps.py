"""Dependency that gives the transport routes the node's transport."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.common.transport.errors import TransportClosed
from mlnode.common.transport.transport import GrpcTransport


def get_transport(request: Request) -> GrpcTransport:
    """The node's gRPC transport (503 when the app runs with another kind)."""
    transport = getattr(request.app.state.context, "transport", None)
    if not isinstance(transport, GrpcTransport):
        raise TransportClosed("this node has no gRPC transport")
    return transport


TransportDep = Annotated[GrpcTransport, Depends(get_transport)]
