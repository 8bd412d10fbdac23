"""`FuseService`: one fusion at a time in a worker thread, plus the models this node shares."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from prometheus_client import Counter

from mlnode.common.context import NodeContext
from mlnode.common.errors import InvalidRequest, MLNodeError, NotFound
from mlnode.common.lifecycle import ServiceKind, WorkerService
from mlnode.common.transport.api import TensorTransport
from mlnode.fuse.executor import FusionProgress
from mlnode.fuse.io.local import LocalSafetensors, SourceNotFound
from mlnode.fuse.io.peer import SharedModel
from mlnode.fuse.io.st_format import SafetensorsFormatError, tensor_nbytes
from mlnode.fuse.job import PreparedFusion, prepare, run
from mlnode.fuse.methods.base import InvalidFusion
from mlnode.fuse.plan import IncompatibleModels
from mlnode.fuse.schemas import (
    FuseJobStatus,
    FuseProgress,
    FuseRequest,
    FuseServiceStatus,
    ShareRequest,
    ShareStatus,
)
from mlnode.fuse.settings import FuseSettings

#: Errors of opening and checking models that are the request's fault (422).
BAD_INPUT = (InvalidFusion, IncompatibleModels, SourceNotFound, SafetensorsFormatError, OSError)


class FuseService(WorkerService[FuseRequest]):
    """Fuses models into a new checkpoint; shares local models with the peers of a task."""

    kind = ServiceKind.FUSE
    status_model = FuseServiceStatus

    def __init__(self, settings: FuseSettings, ctx: NodeContext) -> None:
        super().__init__(ctx.gate)
        self.settings = settings
        self.transport: TensorTransport = ctx.transport
        self._request: FuseRequest | None = None
        self._prepared: PreparedFusion | None = None
        self._progress = FusionProgress()
        self._running: PreparedFusion | None = None
        self._shares: dict[str, tuple[ShareStatus, LocalSafetensors]] = {}
        self._fusions = Counter(
            "mlnode_fuse_fusions", "Fusions by outcome.", ["outcome"], registry=ctx.metrics
        )

    async def _start(self, request: FuseRequest) -> None:
        prepared = await asyncio.to_thread(self._prepare, request)
        try:
            self.ensure_still_starting()  # a stop during a slow peer's listing wins
            self._prepared = prepared
            self._request = request
            self._progress = FusionProgress()
            await super()._start(request)
        except BaseException:
            if self._prepared is prepared:
                self._prepared = None
            prepared.close()
            raise

    def _prepare(self, request: FuseRequest) -> PreparedFusion:
        try:
            return prepare(request, self.transport, self.settings)
        except InvalidFusion as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        except BAD_INPUT as exc:
            raise InvalidRequest(str(exc)) from exc

    def run(self, request: FuseRequest, stop: threading.Event) -> None:
        """The worker: run the prepared fusion."""
        prepared, self._prepared = self._prepared, None
        assert prepared is not None and prepared.request is request
        self._running = prepared
        try:
            run(prepared, self._progress, stop)
        except BaseException:
            self._fusions.labels("stopped" if stop.is_set() else "failed").inc()
            if stop.is_set():
                return
            raise
        finally:
            self._running = None
        self._fusions.labels("finished").inc()

    def progress(self) -> FuseProgress:
        """Tensors and bytes done, and the rate."""
        return self._progress.snapshot()

    def job_status(self) -> FuseJobStatus:
        """The current or last fusion."""
        status = self.status()
        request = self._request
        return FuseJobStatus(
            phase=status.phase,
            task_id=request.task_id if request else None,
            method=request.method if request else None,
            output=request.output.path if request else None,
            started_at=status.started_at,
            finished_at=status.finished_at,
            error=status.last_error,
            **self.progress().model_dump(),
        )

    async def start_job(self, request: FuseRequest) -> FuseJobStatus:
        """Start a fusion; 422 for bad input, 409 while another service runs."""
        await self.start(request)
        return self.job_status()

    async def stop(self) -> None:
        """Cancel pulls in progress, then stop the worker (it ends before the gate is free)."""
        running = self._running
        if running is not None and self.job.active:
            self._stop_event.set()  # first, so that the cancelled pull reads as a stop
            running.cancel()
        await super().stop()

    async def stop_job(self) -> FuseJobStatus:
        """Stop the fusion; the partial output is removed."""
        await self.stop()
        return self.job_status()

    async def share(self, request: ShareRequest) -> ShareStatus:
        """Offer a local checkpoint to the task's known peers (replaces the task's earlier one)."""
        try:
            model = await asyncio.to_thread(LocalSafetensors, Path(request.path))
        except (SourceNotFound, SafetensorsFormatError, OSError) as exc:
            raise InvalidRequest(str(exc), param="path") from exc
        metas = model.describe().values()
        await asyncio.to_thread(self.transport.serve, request.task_id, SharedModel(model))
        share = ShareStatus(
            task_id=request.task_id,
            path=request.path,
            tensors=len(metas),
            bytes=sum(tensor_nbytes(m.dtype, m.shape) for m in metas),
        )
        previous = self._shares.pop(request.task_id, None)
        self._shares[request.task_id] = (share, model)
        if previous is not None:
            previous[1].close()
        return share

    async def unshare(self, task_id: str) -> ShareStatus:
        """Stop offering the task's model."""
        entry = self._shares.pop(task_id, None)
        if entry is None:
            raise NotFound(f"no model is shared for task {task_id}", param="task_id")
        await asyncio.to_thread(self.transport.unserve, task_id)
        entry[1].close()
        return entry[0]

    def shares(self) -> list[ShareStatus]:
        """Models this node shares, by task."""
        return [share for share, _ in self._shares.values()]

    async def close(self) -> None:
        """Stop the fusion and every share."""
        await self.stop()
        for task_id in list(self._shares):
            try:
                await self.unshare(task_id)
            except MLNodeError:
                pass
