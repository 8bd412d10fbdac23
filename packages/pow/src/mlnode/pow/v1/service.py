"""PowService: the PoW job behind the /pow routes (init, phases, validation queue, status)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

import psutil
import torch

from mlnode.common.callbacks import CallbackPolicy, DestinationSender
from mlnode.common.context import NodeContext
from mlnode.common.engines import NoEngines
from mlnode.common.errors import InvalidRequest, NotRunning, Unavailable
from mlnode.common.lifecycle import Phase, ServiceKind, WorkerService
from mlnode.pow.fanout.fanout import PocFanout
from mlnode.pow.v1.compute.devices import cpu_matmul_type, plan_groups
from mlnode.pow.v1.compute.engine import DistanceEngine
from mlnode.pow.v1.compute.nonces import NonceShare, node_shares
from mlnode.pow.v1.compute.params import ModelParams
from mlnode.pow.v1.metrics import PowCollector
from mlnode.pow.v1.models import ModelCache, ModelKey
from mlnode.pow.v1.schemas import (
    PowAccepted,
    PowInitRequest,
    PowPhase,
    PowServiceStatus,
    PowStatus,
    ProofBatch,
)
from mlnode.pow.v1.settings import PowSettings
from mlnode.pow.v1.stats import PowStats
from mlnode.pow.v1.validation import MalformedBatch, check_batch
from mlnode.pow.v1.worker import JobContext, run_group

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowStart:
    """An init request and the phase to enter once the model is loaded."""

    init: PowInitRequest
    phase: PowPhase


class PowService(WorkerService[PowStart]):
    """Proof-of-Work: one job per init; re-init replaces the job and keeps a matching model."""

    kind = ServiceKind.POW
    status_model = PowServiceStatus
    restart_while_running = True

    def __init__(
        self, settings: PowSettings, ctx: NodeContext, poc: PocFanout | None = None
    ) -> None:
        """Create the callback sender and register the PoW metrics.

        `poc` fans PoC v2 out to the engines infer serves (`build_services` wires it); without
        it the node has no engines and the PoC v2 routes answer 503.
        """
        super().__init__(ctx.gate)
        self.settings = settings
        self.poc = poc or PocFanout(NoEngines())
        self.sender = DestinationSender(CallbackPolicy.of(settings))
        self.stats = PowStats()
        self.models = ModelCache()
        self._init: PowInitRequest | None = None
        self._phase = PowPhase.NO_CONTROLLER
        self._wanted_phase = PowPhase.IDLE
        self._engines: list[DistanceEngine] = []
        self._devices: list[str] = []
        self._search: tuple[object, ...] | None = None
        self._progress: dict[int, int] = {}
        self._validations: queue.Queue[ProofBatch] = queue.Queue(settings.validation_queue_size)
        ctx.metrics.register(PowCollector(self))

    async def init(self, request: PowInitRequest, phase: PowPhase) -> PowStatus:
        """Load the model for the request's block (reused when unchanged) and enter `phase`."""
        if request.node_id >= request.node_count:
            raise InvalidRequest(
                f"node_id {request.node_id} must be below node_count {request.node_count}",
                param="node_id",
            )
        try:
            request.params.to_model_params()
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="params") from exc
        await self.start(PowStart(request, phase))
        return self.pow_status()

    async def _start(self, request: PowStart) -> None:
        old = self._init
        if old is not None and old.block_hash != request.init.block_hash:
            self._drain_validations()
        self._init = request.init
        self._wanted_phase = request.phase
        self.stats.reset_job()
        self._phase = PowPhase.LOADING
        self.sender.start()
        await super()._start(request)

    async def set_phase(self, phase: PowPhase) -> PowStatus:
        """Switch between generating and validating without reloading."""
        if not self.job.active or self._init is None:
            raise NotRunning("PoW is not initialised; POST /api/v1/pow/init first")
        self._wanted_phase = phase
        if self._phase is not PowPhase.LOADING:
            self._phase = phase
        return self.pow_status()

    async def submit_validation(self, batch: ProofBatch) -> PowAccepted:
        """Check a received batch and queue it for recomputation (422 when malformed)."""
        init = self._init
        if not self.job.active or init is None:
            raise NotRunning("PoW is not initialised; POST /api/v1/pow/init/validate first")
        try:
            check_batch(batch.nonces, batch.dist, batch.block_hash, init.block_hash)
        except MalformedBatch as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        try:
            self._validations.put_nowait(batch)
        except queue.Full as exc:
            raise Unavailable(
                f"{self._validations.maxsize} batches are waiting for validation; retry later"
            ) from exc
        return PowAccepted(status="OK", queued=self._validations.qsize())

    def run(self, request: PowStart, stop: threading.Event) -> None:
        """The job: load the models, then one loop per GPU group until stopped."""
        self._phase = PowPhase.LOADING
        if self.settings.cpu_threads:
            torch.set_num_threads(self.settings.cpu_threads)
        params = request.init.params.to_model_params()
        groups = tuple(tuple(g) for g in plan_groups(self.settings.device, params))
        key = ModelKey(request.init.block_hash, params, groups, self._cpu_matmul(params))
        models = self.models.get(key)
        self._devices = [",".join(g) for g in groups]
        engines = [DistanceEngine(model, request.init.batch_size) for model in models]
        self._engines = engines
        try:
            if not stop.is_set():
                self._phase = self._wanted_phase
                self._run_groups(self._job_context(request.init, stop, len(engines)), engines)
        finally:
            for engine in engines:
                engine.close()

    def _cpu_matmul(self, params: ModelParams) -> str:
        chosen = cpu_matmul_type(
            self.settings.cpu_matmul, params, psutil.virtual_memory().available
        )
        if chosen != self.settings.cpu_matmul:
            log.warning("f32 CPU weights would not fit in memory; using f16 matmuls")
        return chosen

    def _job_context(self, init: PowInitRequest, stop: threading.Event, groups: int) -> JobContext:
        shares = node_shares(init.node_id, init.node_count, groups)
        return JobContext(
            init=init,
            phase=lambda: self._phase,
            validations=self._validations,
            sender=self.sender,
            stats=self.stats,
            stop=stop,
            shares=shares,
            resume=self._resume_point(init, shares),
        )

    def _run_groups(self, job: JobContext, engines: list[DistanceEngine]) -> None:
        errors: list[BaseException] = []

        def guarded(engine: DistanceEngine, share: NonceShare) -> None:
            try:
                run_group(job, engine, share)
            except BaseException as exc:
                errors.append(exc)
                job.stop.set()

        threads = [
            threading.Thread(target=guarded, args=(e, s), name=f"pow-group-{i}", daemon=True)
            for i, (e, s) in enumerate(zip(engines, job.shares, strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    async def stop(self) -> None:
        """Stop the job and free the model; pending callbacks are still delivered."""
        await super().stop()
        self._phase = PowPhase.STOPPED if self._init is not None else PowPhase.NO_CONTROLLER
        # Off the loop: release waits for a model build still holding the cache's lock.
        await asyncio.to_thread(self.models.release)

    async def close(self) -> None:
        """Server shutdown: stop, then give the callbacks a last chance (2 s)."""
        await self.stop()
        await self.sender.drain(timeout_s=2.0)
        await self.sender.close()

    def _resume_point(self, init: PowInitRequest, shares: list[NonceShare]) -> dict[int, int]:
        """Progress of the same search (block, key, shares) to continue from, or a fresh one."""
        search = (init.block_hash, init.public_key, init.params.model_dump_json(), tuple(shares))
        if search != self._search:
            self._search, self._progress = search, {}
        return self._progress

    def _drain_validations(self) -> None:
        while True:
            try:
                self._validations.get_nowait()
            except queue.Empty:
                return

    def pow_status(self) -> PowStatus:
        """The PoW status body."""
        delivery = self.sender.stats()
        active = self.job.active
        phase = self._phase if active else self._idle_phase()
        init = self._init
        return PowStatus(
            status=phase,
            is_model_initialized=active and self.models.loaded and phase is not PowPhase.LOADING,
            block_hash=init.block_hash if init else None,
            block_height=init.block_height if init else None,
            devices=self._devices,
            batch_size=min((e.batch_size for e in self._engines), default=None),
            nonces_checked=self.stats.nonces_checked,
            proofs_found=self.stats.proofs_found,
            nonces_per_second=self.stats.rate(),
            batches_validated=self.stats.batches_validated,
            validation_queue=self._validations.qsize(),
            batches_sent=delivery.sent,
            batches_pending=delivery.pending,
            batches_dropped=delivery.dropped,
            callbacks=delivery,
            model_builds=self.models.builds,
            model_build_seconds=self.models.build_seconds,
            last_error=self.job.last_error or self.stats.last_error or delivery.last_error,
        )

    def _idle_phase(self) -> PowPhase:
        if self.job.phase is Phase.IDLE:
            return PowPhase.NO_CONTROLLER
        return PowPhase.STOPPED

    def progress(self) -> PowStatus:
        """The PoW status body inside the generic service status."""
        return self.pow_status()
