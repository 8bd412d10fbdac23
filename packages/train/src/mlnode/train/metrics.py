"""Prometheus gauges of the training job, read from its progress at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GAUGES = {
    "inner_step": "Inner optimizer steps done.",
    "outer_round": "Outer rounds done.",
    "tokens_per_s": "Training tokens per second over the last round.",
    "bytes_sent": "Pseudo-gradient payload bytes sent in this job.",
    "bytes_received": "Pseudo-gradient payload bytes received in this job.",
}


class TrainCollector(Collector):
    """`mlnode_train_*` gauges from a progress snapshot."""

    def __init__(self, progress: Callable[[], dict[str, Any]]) -> None:
        self.progress = progress

    def collect(self) -> Iterator[Metric]:
        """One gauge per figure; absent figures are skipped."""
        figures = self.progress()
        for name, help_text in GAUGES.items():
            value = figures.get(name)
            if isinstance(value, int | float):
                yield GaugeMetricFamily(f"mlnode_train_{name}", help_text, value=float(value))
        if "peers_alive" in figures:
            yield GaugeMetricFamily(
                "mlnode_train_peers_alive",
                "Peers whose pseudo-gradient went into the last round.",
                value=float(len(figures["peers_alive"])),
            )
        history = figures.get("loss_history") or []
        if history and history[-1].get("loss") is not None:
            yield GaugeMetricFamily(
                "mlnode_train_loss", "Mean train loss of the last round.", value=history[-1]["loss"]
            )


def register_train_metrics(
    registry: CollectorRegistry, progress: Callable[[], dict[str, Any]]
) -> None:
    """Add the training collector to the node's registry."""
    registry.register(TrainCollector(progress))
