"""Runs a fusion plan tensor by tensor: load -> merge -> write -> evict.

At any time the process holds one tensor per model in float32, plus the result and the tensors
read ahead: memory stays at a few tensors whatever the model size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from mlnode.fuse.io.source import TensorSource
from mlnode.fuse.io.writer import ShardedWriter
from mlnode.fuse.methods.base import FusionMethod, ResolvedParams
from mlnode.fuse.plan import Action, FusionPlan, TensorTask

Loaded = tuple[list[torch.Tensor], torch.Tensor | None]


class FusionStopped(Exception):
    """The fusion was asked to stop."""


class NonFiniteTensor(ValueError):
    """A source tensor holds NaN or inf."""


@dataclass
class FusionProgress:
    """Thread-safe counters read by status routes while the executor runs."""

    tensors_total: int = 0
    bytes_total: int = 0
    tensors_done: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, nbytes: int) -> None:
        """One more output tensor written."""
        with self._lock:
            self.tensors_done += 1
            self.bytes_done += nbytes

    def snapshot(self) -> dict[str, float | int]:
        """Counters and the output rate so far."""
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            return {
                "tensors_done": self.tensors_done,
                "tensors_total": self.tensors_total,
                "bytes_done": self.bytes_done,
                "bytes_total": self.bytes_total,
                "bytes_per_s": self.bytes_done / elapsed,
            }


@dataclass
class Fusion:
    """Everything one fusion needs: models, method, plan, writer."""

    method: FusionMethod
    resolved: ResolvedParams
    sources: Sequence[TensorSource]
    base: TensorSource | None
    plan: FusionPlan
    prefetch: int = 1


def load_float(source: TensorSource, name: str) -> torch.Tensor:
    """One tensor as float32; NonFiniteTensor names it when it holds NaN or inf."""
    tensor = source.get(name).to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteTensor(f"tensor {name} of {source.label} holds NaN or inf")
    return tensor


def _load_task(fusion: Fusion, task: TensorTask) -> Loaded:
    reference = fusion.base if fusion.base is not None else fusion.sources[0]
    if task.action is Action.COPY:
        return [], reference.get(task.name)
    tensors = [load_float(s, task.name) for s in fusion.sources]
    base = load_float(fusion.base, task.name) if fusion.base is not None else None
    return tensors, base


def _loaded(
    fusion: Fusion, pool: ThreadPoolExecutor
) -> Iterator[tuple[TensorTask, Future[Loaded]]]:
    """Tasks with their inputs loading up to `prefetch` tensors ahead of the merge."""
    pending: list[tuple[TensorTask, Future[Loaded]]] = []
    for task in fusion.plan.tasks:
        pending.append((task, pool.submit(_load_task, fusion, task)))
        if len(pending) > fusion.prefetch:
            yield pending.pop(0)
    yield from pending


def _merge(fusion: Fusion, task: TensorTask, loaded: Loaded) -> torch.Tensor:
    tensors, base = loaded
    if task.action is Action.COPY:
        assert base is not None
        return base.to(task.dtype)
    merged = fusion.method.merge(
        tensors, base, fusion.resolved.params, fusion.resolved.tensor_params, name=task.name
    )
    return merged.to(task.dtype)


def execute(
    fusion: Fusion, writer: ShardedWriter, progress: FusionProgress, stop: threading.Event
) -> None:
    """Merge and write every planned tensor; FusionStopped when `stop` is set."""
    progress.tensors_total = len(fusion.plan.tasks)
    progress.bytes_total = fusion.plan.total_bytes
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse-load") as pool:
        try:
            for task, future in _loaded(fusion, pool):
                if stop.is_set():
                    raise FusionStopped("fusion stopped")
                result = _merge(fusion, task, future.result())
                del future
                writer.write(task.name, result)
                progress.advance(task.nbytes)
                del result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
