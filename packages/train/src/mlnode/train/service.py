"""`TrainService`: runs one DiLoCo worker in a thread; the node's TRAIN state.

With several local devices the thread is local rank 0 and starts the other ranks (`ranks`).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import torch

from mlnode.common.context import NodeContext
from mlnode.common.errors import InvalidRequest
from mlnode.common.lifecycle import (
    ServiceKind,
    ServiceStatus,
    StoppedWhileStarting,
    WorkerService,
)
from mlnode.common.transport import TensorTransport
from mlnode.train.legacy import LegacyTrainBody, to_train_request
from mlnode.train.metrics import register_train_metrics
from mlnode.train.progress import TrainProgress
from mlnode.train.schemas import TrainJobProgress, TrainRequest, TrainStatus
from mlnode.train.settings import TrainSettings
from mlnode.train.sizing import check_request_fits
from mlnode.train.trainer import DilocoTrainer, TrainerEnv


class TrainService(WorkerService[TrainRequest]):
    """POST /train/start builds the worker (bad input is a 422 here), then trains in a thread."""

    kind = ServiceKind.TRAIN
    status_model = TrainStatus

    def __init__(self, settings: TrainSettings, ctx: NodeContext) -> None:
        super().__init__(ctx.gate)
        self.settings = settings
        self.state_dir = ctx.settings.state_dir
        self.transport: TensorTransport = ctx.transport
        self._progress: TrainProgress | None = None
        self._trainer: DilocoTrainer | None = None
        self._serving: DilocoTrainer | None = None
        register_train_metrics(ctx.metrics, self.progress)

    async def start_body(self, body: TrainRequest | LegacyTrainBody) -> ServiceStatus:
        """Start from either body form (the legacy one is mapped or refused with 422)."""
        request = to_train_request(body)
        await asyncio.to_thread(
            check_request_fits, request, self.settings.memory_budget(), self.settings.max_layers
        )
        return await self.start(request)

    def checkpoint_dir(self, request: TrainRequest) -> Path:
        """Where this task's checkpoints live."""
        if request.checkpoint.dir is not None:
            return Path(request.checkpoint.dir)
        root = self.settings.checkpoint_root or self.state_dir / "train"
        return root / request.task_id

    async def _start(self, request: TrainRequest) -> None:
        if self.settings.torch_threads is not None:
            torch.set_num_threads(self.settings.torch_threads)
        if self.settings.torch_device().type == "cuda" and not torch.cuda.is_available():
            raise InvalidRequest("MLNODE_TRAIN_DEVICE asks for CUDA but no GPU is visible")
        devices = self.settings.local_device_list()
        env = TrainerEnv(
            transport=self.transport,
            device=devices[0],
            checkpoint_dir=self.checkpoint_dir(request),
            vote_timeout_s=self.settings.vote_timeout_s,
            join_timeout_s=self.settings.join_timeout_s,
            local_devices=tuple(devices),
            local_timeout_s=self.settings.local_timeout_s,
            torch_threads=self.settings.torch_threads,
        )
        progress = TrainProgress(request.task_id, request.rank, request.world_size)
        trainer = await asyncio.to_thread(DilocoTrainer.build, request, env, progress)
        try:
            self.ensure_still_starting()  # a stop while the model was built wins
        except StoppedWhileStarting:
            trainer.unserve()
            raise
        self._stop_serving()
        self._trainer = self._serving = trainer
        self._progress = progress
        await super()._start(request)

    def run(self, request: TrainRequest, stop: threading.Event) -> None:
        """Train (in the worker thread); a finished worker keeps serving its last state."""
        trainer = self._trainer
        if trainer is None:
            raise RuntimeError("no trainer was built for this job")
        try:
            trainer.run(stop)
        finally:
            self._trainer = None

    async def stop(self) -> None:
        """Stop training and stop serving this worker's state to peers."""
        await super().stop()
        self._stop_serving()

    def _stop_serving(self) -> None:
        if self._serving is not None:
            self._serving.unserve()
            self._serving = None

    def progress(self) -> TrainJobProgress | None:
        """Figures of the current or last job."""
        return self._progress.snapshot() if self._progress is not None else None
