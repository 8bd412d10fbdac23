"""Health loop of running engines: deaths, failing health, stalled schedulers; restarts.

Stalls are judged by scheduler progress (`liveness`), since `/health` can answer 200 from a hung
engine; dead instances are restarted within a limit.

Every change is published to the balancer as one new snapshot of the healthy backends. When every
instance is dead and no restart is left, the job fails with the cause quoted from the engine log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from mlnode.common.engines import EngineClient
from mlnode.common.errors import EngineFailed
from mlnode.common.lifecycle import JobState
from mlnode.infer.balancer import LeastConnections
from mlnode.infer.engine import EngineInstance, InstanceState, VLLMGroup
from mlnode.infer.liveness import ProgressJudge, Verdict, read_progress
from mlnode.infer.settings import InferSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferMetrics:
    """Prometheus figures of the engines."""

    healthy_instances: Gauge
    deaths: Counter
    restarts: Counter


def register_metrics(registry: CollectorRegistry, balancer: LeastConnections) -> InferMetrics:
    """Register the inference metrics on the node's registry."""
    in_flight = Gauge(
        "mlnode_infer_requests_in_flight",
        "Requests the proxy is forwarding now.",
        registry=registry,
    )
    in_flight.set_function(lambda: float(balancer.total_in_flight()))
    return InferMetrics(
        healthy_instances=Gauge(
            "mlnode_infer_healthy_instances", "Engine instances serving now.", registry=registry
        ),
        deaths=Counter(
            "mlnode_infer_engine_deaths", "Engine instances that exited.", registry=registry
        ),
        restarts=Counter(
            "mlnode_infer_engine_restarts", "Automatic engine restarts.", registry=registry
        ),
    )


@dataclass
class _ProgressWatch:
    """Progress judgement of one engine process."""

    pid: int | None
    judge: ProgressJudge
    read_at: float = 0.0
    verdict: Verdict = field(default_factory=lambda: Verdict(stalled=False))


class HealthWatch:
    """Watches one `VLLMGroup` until it is stopped or every instance is dead."""

    def __init__(
        self,
        group: VLLMGroup,
        settings: InferSettings,
        client: EngineClient,
        balancer: LeastConnections,
        job: JobState,
        metrics: InferMetrics,
    ) -> None:
        self.group = group
        self.settings = settings
        self.client = client
        self.balancer = balancer
        self.job = job
        self.metrics = metrics
        self._loop: asyncio.Task[None] | None = None
        self._restarting: dict[int, asyncio.Task[None]] = {}
        self._progress_watch: dict[int, _ProgressWatch] = {}

    def start(self) -> None:
        """Publish the healthy instances and check them every `health_interval_s`."""
        self.publish()
        self._loop = asyncio.create_task(self._run())

    def tasks(self) -> list[asyncio.Task[None]]:
        """The loop and any restart in progress (cancelled by the service's stop)."""
        return [t for t in (self._loop, *self._restarting.values()) if t is not None]

    def publish(self) -> None:
        """Hand the balancer the backends that serve now."""
        backends = self.group.healthy_backends()
        self.balancer.set_backends(backends)
        self.metrics.healthy_instances.set(len(backends))

    async def _run(self) -> None:
        while await self.check():
            await asyncio.sleep(self.settings.health_interval_s)

    async def check(self) -> bool:
        """One round over every instance; False once the group is dead for good."""
        idle = [i for i in self.group.instances if i.index not in self._restarting]
        await asyncio.gather(*(self._check_one(i) for i in idle))
        self.publish()
        if self._restarting or any(i.state is not InstanceState.DEAD for i in self.group.instances):
            return True
        first = self.group.instances[0]
        self.job.fail(
            EngineFailed(
                f"every engine instance exited (engine 0: code {first.exit_code}); "
                f"last lines of {first.log_path}:\n{first.tail(self.settings.log_tail_lines)}"
            )
        )
        await self.group.stop()
        return False

    async def _check_one(self, instance: EngineInstance) -> None:
        if instance.state is not InstanceState.DEAD:
            code = instance.poll()
            if code is None and await self._probe(instance):
                return
            code = instance.poll() if code is None else code
            if code is None:
                return
            instance.state = InstanceState.DEAD
            self.metrics.deaths.inc()
            log.error(
                "engine %d exited with code %s; last lines:\n%s",
                instance.index,
                code,
                instance.tail(self.settings.log_tail_lines),
            )
        if instance.restarts < self.settings.max_restarts:
            self._restarting[instance.index] = asyncio.create_task(self._restart(instance))

    async def _probe(self, instance: EngineInstance) -> bool:
        """Health and progress check; failing either (while it runs) makes it UNHEALTHY."""
        ok = await instance.check_health(self.client, self.settings.health_timeout_s)
        signal, reason = "health", None if ok else "/health did not answer 200"
        if ok:
            verdict = await self._progress(instance)
            if verdict.stalled:
                ok, signal, reason = False, "progress", verdict.reason
        state = InstanceState.HEALTHY if ok else InstanceState.UNHEALTHY
        if state is not instance.state and (ok or instance.poll() is None):
            log.warning("engine %d is %s (%s: %s)", instance.index, state, signal, reason)
            instance.state = state
        instance.signal, instance.reason = signal, reason
        return ok

    async def _progress(self, instance: EngineInstance) -> Verdict:
        """The progress verdict, re-read from the engine's /metrics every liveness interval."""
        now = time.monotonic()
        watch = self._progress_watch.get(instance.index)
        if watch is None or watch.pid != instance.pid:
            judge = ProgressJudge(
                instance.started_at,
                self.settings.liveness_stall_s,
                self.settings.liveness_cold_start_s,
            )
            watch = self._progress_watch[instance.index] = _ProgressWatch(instance.pid, judge)
        elif now - watch.read_at < self.settings.liveness_interval_s:
            return watch.verdict
        watch.read_at = now
        if instance.backend is not None:
            sample = await read_progress(
                self.client, instance.backend, self.settings.health_timeout_s
            )
            if sample is not None:
                watch.verdict = watch.judge.observe(now, sample)
        return watch.verdict

    async def _restart(self, instance: EngineInstance) -> None:
        log.warning("restarting engine %d (restart %d)", instance.index, instance.restarts + 1)
        try:
            await self.group.restart(instance, self.client)
            self.metrics.restarts.inc()
        except Exception as exc:
            instance.state = InstanceState.DEAD
            log.error("restart of engine %d failed: %s", instance.index, exc)
        finally:
            self._restarting.pop(instance.index, None)
            self.publish()
