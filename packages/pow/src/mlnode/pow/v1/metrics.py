"""Prometheus metrics of the PoW service, read from its status when scraped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlnode.pow.v1.schemas import PowPhase

if TYPE_CHECKING:
    from mlnode.pow.v1.service import PowService


class PowCollector(Collector):
    """`mlnode_pow_*` series: phase, model loaded, nonces, proofs, rate, deliveries."""

    def __init__(self, service: PowService) -> None:
        """Read from `service` at scrape time."""
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """One sample per series."""
        status = self.service.pow_status()
        stats = self.service.stats
        delivery = self.service.sender.stats()
        phase = GaugeMetricFamily(
            "mlnode_pow_phase", "1 for the current PoW phase.", labels=["phase"]
        )
        for phase_name in PowPhase:
            phase.add_metric([phase_name.value], float(status.status is phase_name))
        yield phase
        yield GaugeMetricFamily(
            "mlnode_pow_model_loaded",
            "1 while the seeded model is loaded.",
            value=float(status.is_model_initialized),
        )
        yield GaugeMetricFamily(
            "mlnode_pow_nonces_per_second", "Recent compute rate.", value=status.nonces_per_second
        )
        yield GaugeMetricFamily(
            "mlnode_pow_batches_pending", "Callbacks waiting for delivery.", value=delivery.pending
        )
        counters = {
            "nonces_checked": ("Nonces computed (generation and validation).", stats.total_nonces),
            "proofs_found": ("Nonces found below r_target.", stats.total_proofs),
            "batches_validated": ("Received batches judged.", stats.total_validated),
            "frauds_detected": ("Judged batches found fraudulent.", stats.total_frauds),
            "batches_sent": ("Callbacks delivered.", delivery.sent),
            "batches_dropped": ("Callbacks given up on.", delivery.dropped),
            "callback_retries": (
                "Callback attempts that failed and were retried.",
                delivery.retried,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"mlnode_pow_{name}", doc, value=value)
