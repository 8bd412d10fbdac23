"""Prometheus gauges of the training job, read from its progress at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlnode.train.schemas import TrainJobProgress

GAUGES = {
    "inner_step": "Inner optimizer steps done.",
    "outer_round": "Outer rounds done.",
    "tokens_per_s": "Training tokens per second over the last round.",
    "bytes_sent": "Pseudo-gradient payload bytes sent in this job.",
    "bytes_received": "Pseudo-gradient payload bytes received in this job.",
}


class TrainCollector(Collector):
    """`mlnode_train_*` gauges from a progress snapshot."""

    def __init__(self, progress: Callable[[], TrainJobProgress | None]) -> None:
        self.progress = progress

    def collect(self) -> Iterator[Metric]:
        """One gauge per figure; unset figures (and all, before the first job) are skipped."""
        figures = self.progress()
        if figures is None:
            return
        for name, help_text in GAUGES.items():
            value = getattr(figures, name)
            if isinstance(value, int | float):
                yield GaugeMetricFamily(f"mlnode_train_{name}", help_text, value=float(value))
        yield GaugeMetricFamily(
            "mlnode_train_peers_alive",
            "Peers whose pseudo-gradient went into the last round.",
            value=float(len(figures.peers_alive)),
        )
        history = figures.loss_history
        if history and history[-1].loss is not None:
            yield GaugeMetricFamily(
                "mlnode_train_loss", "Mean train loss of the last round.", value=history[-1].loss
            )


def register_train_metrics(
    registry: CollectorRegistry, progress: Callable[[], TrainJobProgress | None]
) -> None:
    """Add the training collector to the node's registry."""
    registry.register(TrainCollector(progress))
