"""What a feature package's service gets from the node when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from mlnode.common.lifecycle import ServiceGate
from mlnode.common.settings import NodeSettings
from mlnode.common.transport.api import TensorTransport
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport


def _unstarted_transport() -> TensorTransport:
    """A transport that refuses every call until started (tests that never serve it)."""
    return GrpcTransport(TransportSettings())  # type: ignore[call-arg]  # values come from env


@dataclass
class NodeContext:
    """Shared objects of one MLNode process, created by `mlnode.api.create_app`."""

    settings: NodeSettings
    gate: ServiceGate = field(default_factory=ServiceGate)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: The node's tensor transport; `create_app` starts and stops it with the server.
    transport: TensorTransport = field(default_factory=_unstarted_transport)
