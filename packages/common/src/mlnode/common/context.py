"""What a feature package's service gets from the node when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from mlnode.common.lifecycle import ServiceGate
from mlnode.common.settings import NodeSettings


@dataclass
class NodeContext:
    """Shared objects of one MLNode process, created by `mlnode.api.create_app`."""

    settings: NodeSettings
    gate: ServiceGate = field(default_factory=ServiceGate)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
