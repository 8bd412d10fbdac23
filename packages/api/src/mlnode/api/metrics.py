"""Node-level Prometheus metrics, rendered from the node state at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlnode.api.node import STOPPED, NodeState
from mlnode.common.lifecycle import ServiceKind

STATES = [STOPPED, *(kind.value for kind in ServiceKind)]


class NodeStateCollector(Collector):
    """`mlnode_node_state{state}` and `mlnode_service_healthy{service}`."""

    def __init__(self, node: NodeState) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        """Produce the gauges from the current state."""
        current = self.node.state()
        state = GaugeMetricFamily("mlnode_node_state", "Current node state.", labels=["state"])
        for name in STATES:
            state.add_metric([name], 1.0 if name == current else 0.0)
        yield state
        healthy = GaugeMetricFamily(
            "mlnode_service_healthy", "1 unless the service's last job failed.", labels=["service"]
        )
        for service in self.node.gate.services:
            healthy.add_metric([service.kind.value], 1.0 if service.healthy() else 0.0)
        yield healthy


def register_node_metrics(registry: CollectorRegistry, node: NodeState) -> None:
    """Add the node collector to the app's registry."""
    registry.register(NodeStateCollector(node))
