"""The exporter: background scrapes into caches, and a collector that only reads them.

The federation calls every 10 s with a 5 s deadline; a slow or hung engine only ages its
`mlnode_source_scrape_timestamp_seconds{source="vllm",replica}`, it never delays the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from mlnode.api.federation.hardware import GpuReader, HostReader, Snapshot
from mlnode.api.federation.schema import SCHEMA_VERSION, merge, rewrite
from mlnode.api.federation.settings import MetricsSettings
from mlnode.common.engines import EngineEndpoint, ServingEngines
from mlnode.common.errors import MLNodeError

log = logging.getLogger(__name__)

_COUNTERS = frozenset(
    {"mlnode_gpu_ecc_dbe_total", "mlnode_gpu_pcie_replay_total", "mlnode_gpu_xid_events_total"}
)


@dataclass(frozen=True)
class ServingConfig:
    """What `mlnode_config_info` reports of the engines serving now."""

    model_name: str
    dtype: str
    replicas: int
    max_num_seqs: str = ""
    max_model_len: str = ""
    tensor_parallel_size: str = ""
    pipeline_parallel_size: str = ""


@dataclass
class EngineCache:
    """The last good scrape of one replica."""

    families: list[Metric] = field(default_factory=list)
    at: float | None = None


class Exporter:
    """Scrapes engines, NVML and the host in the background; `registry` renders the caches."""

    def __init__(
        self,
        settings: MetricsSettings,
        version: str,
        engines: ServingEngines,
        serving: Callable[[], ServingConfig | None],
        host: HostReader,
        gpus: GpuReader | None = None,
    ) -> None:
        self.settings = settings
        self.version = version
        self._engines = engines
        self._serving = serving
        self._host = host
        self._gpus = gpus or GpuReader()
        self.engines: dict[int, EngineCache] = {}
        self.host = Snapshot()
        self.gpu = Snapshot()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SchemaCollector(self))
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Start the background loop (nothing when export is off)."""
        if not self.settings.enabled:
            log.info("metrics export: off (/api/v1/metrics answers 404)")
            return
        log.info("metrics export: full (schema v1 on /api/v1/metrics)")
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Stop the loop and release NVML."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._gpus.close)

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("metrics refresh failed")
            await asyncio.sleep(self.settings.scrape_interval_s)

    async def refresh(self) -> None:
        """One round: every engine at once, NVML and host in worker threads.

        Each cache is replaced whole, never changed in place: the collector may read them from
        the route's worker thread.
        """
        backends = sorted(self._engines.serving_engines(), key=lambda b: b.port)
        serving = self._serving()
        name = serving.model_name if serving else None
        scraped = await asyncio.gather(
            *(self._scrape(i, b, name) for i, b in enumerate(backends)),
        )
        self.engines = dict(enumerate(scraped))
        self.host = await asyncio.to_thread(self._host.read)
        self.gpu = await asyncio.to_thread(self._gpus.read)

    async def _scrape(
        self, replica: int, backend: EngineEndpoint, model_name: str | None
    ) -> EngineCache:
        """A new reading of one engine, or its last good one when this scrape fails."""
        previous = self.engines.get(replica, EngineCache())
        try:
            answer = await self._engines.engine_client().get(
                backend,
                "/metrics",
                timeout_s=self.settings.scrape_timeout_s,
                max_bytes=self.settings.max_engine_bytes,
            )
            if answer.status_code != 200:
                raise ValueError(f"HTTP {answer.status_code}")
            text = answer.content.decode()
            limit = self.settings.max_series_per_replica
            families, cut = await asyncio.to_thread(rewrite, text, replica, model_name, limit)
        except (MLNodeError, ValueError) as exc:
            log.debug("scrape of engine %d (port %d) failed: %s", replica, backend.port, exc)
            return previous
        if cut:
            log.warning("engine %d exposes over %d allow-listed series; cut", replica, limit)
        return EngineCache(families, time.time())


class _SchemaCollector(Collector):
    """Renders the exporter's caches; never waits on a source."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        """Schema v1's families from the last readings."""
        exporter = self.exporter
        schema = InfoMetricFamily("gonka_metrics_schema", "Metrics schema version.")
        schema.add_metric([], {"version": SCHEMA_VERSION})
        yield schema
        version = InfoMetricFamily("mlnode_version", "MLNode release.")
        version.add_metric([], {"version": exporter.version})
        yield version
        serving = exporter._serving()
        if serving is not None:
            config = InfoMetricFamily("mlnode_config", "Serving configuration.")
            config.add_metric([], {k: str(v) for k, v in serving.__dict__.items()})
            yield config
        live = {i: c for i, c in exporter.engines.items() if c.at is not None}
        yield from merge(c.families for c in live.values())
        yield from _hardware(exporter.host.samples + exporter.gpu.samples)
        stamps = Metric(
            "mlnode_source_scrape_timestamp_seconds",
            "Unix time of the last successful collection of each source.",
            "gauge",
        )
        for i, cache in sorted(live.items()):
            assert cache.at is not None
            stamps.add_sample(stamps.name, {"source": "vllm", "replica": str(i)}, cache.at)
        for source, snapshot in (("host", exporter.host), ("nvml", exporter.gpu)):
            if snapshot.at is not None:
                stamps.add_sample(stamps.name, {"source": source}, snapshot.at)
        yield stamps


def _hardware(samples: list[tuple[str, dict[str, str], float]]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    for name, labels, value in samples:
        family = families.get(name)
        if family is None:
            typ = "counter" if name in _COUNTERS else "gauge"
            family = Metric(name.removesuffix("_total"), f"{name} (gonka schema v1).", typ)
            families[name] = family
        family.add_sample(name, labels, value)
    yield from families.values()
