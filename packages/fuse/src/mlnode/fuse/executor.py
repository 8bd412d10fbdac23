"""Runs a fusion plan tensor by tensor: load -> merge -> write -> evict.

At any time the process holds one tensor per model (in its stored dtype; float32 only while a
method reads it), the result, the result being written and the tensors read ahead: memory stays
at a few tensors whatever the model size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import overload

import torch

from mlnode.fuse.io.source import TensorSource
from mlnode.fuse.io.writer import ShardedWriter
from mlnode.fuse.methods.base import FusionMethod, MergeInputs, ResolvedParams
from mlnode.fuse.plan import Action, FusionPlan, TensorTask
from mlnode.fuse.schemas import FuseProgress

Loaded = tuple[list[torch.Tensor], torch.Tensor | None]


#: Dtypes `aminmax` reduces directly; others (float8) are checked in float32.
REDUCIBLE = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


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
    ended: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, nbytes: int) -> None:
        """One more output tensor written."""
        with self._lock:
            self.tensors_done += 1
            self.bytes_done += nbytes

    def end(self) -> None:
        """The fusion ended: the rate stops changing."""
        with self._lock:
            self.ended = time.monotonic()

    def snapshot(self) -> FuseProgress:
        """Counters and the output rate so far."""
        with self._lock:
            end = self.ended if self.ended is not None else time.monotonic()
            elapsed = max(end - self.started, 1e-9)
            return FuseProgress(
                tensors_done=self.tensors_done,
                tensors_total=self.tensors_total,
                bytes_done=self.bytes_done,
                bytes_total=self.bytes_total,
                bytes_per_s=self.bytes_done / elapsed,
            )


@dataclass
class Fusion:
    """Everything one fusion needs: models, method and its parameters, plan."""

    method: FusionMethod
    resolved: ResolvedParams
    sources: Sequence[TensorSource]
    base: TensorSource | None
    plan: FusionPlan
    prefetch: int = 1


def load_checked(source: TensorSource, name: str) -> torch.Tensor:
    """One tensor in its stored dtype; NonFiniteTensor names it when it holds NaN or inf."""
    tensor = source.get(name)
    if not is_finite(tensor):
        raise NonFiniteTensor(f"tensor {name} of {source.label} holds NaN or inf")
    return tensor


def is_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf; min and max propagate both, in one pass and without a mask tensor."""
    if tensor.numel() == 0:
        return True
    if tensor.dtype not in REDUCIBLE:
        tensor = tensor.to(torch.float32)
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


class PendingTask:
    """One task's inputs, each model's tensor loading in the pool."""

    def __init__(self, fusion: Fusion, task: TensorTask, pool: ThreadPoolExecutor) -> None:
        self.task = task
        self.base: Future[torch.Tensor] | None = None
        self.sources: list[Future[torch.Tensor]] = []
        if task.action is Action.COPY:
            reference = fusion.base if fusion.base is not None else fusion.sources[0]
            self.base = pool.submit(reference.get, task.name)
            return
        self.sources = [pool.submit(load_checked, s, task.name) for s in fusion.sources]
        if fusion.base is not None:
            self.base = pool.submit(load_checked, fusion.base, task.name)

    def result(self) -> Loaded:
        """The loaded tensors; re-raises a load's error."""
        return [f.result() for f in self.sources], self.base.result() if self.base else None


def _pending(fusion: Fusion, pool: ThreadPoolExecutor) -> Iterator[PendingTask]:
    """Tasks with their inputs loading up to `prefetch` tensors ahead of the merge."""
    queue: list[PendingTask] = []
    for task in fusion.plan.tasks:
        queue.append(PendingTask(fusion, task, pool))
        if len(queue) > fusion.prefetch:
            yield queue.pop(0)
    yield from queue


class Float32View(Sequence[torch.Tensor]):
    """Source tensors that turn float32 when read, so only the ones in use take float32 space.

    Each read converts again: a method reads every item once, or keeps what it read.
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self._tensors = tensors

    def __len__(self) -> int:
        return len(self._tensors)

    @overload
    def __getitem__(self, index: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[torch.Tensor]: ...

    def __getitem__(self, index: int | slice) -> torch.Tensor | Sequence[torch.Tensor]:
        if isinstance(index, slice):
            return Float32View(self._tensors[index])
        return self._tensors[index].to(torch.float32)


def _merge(fusion: Fusion, task: TensorTask, loaded: Loaded) -> torch.Tensor:
    tensors, base = loaded
    if task.action is Action.COPY:
        assert base is not None
        return base.to(task.dtype)
    method = fusion.method
    merged = method.merge(
        MergeInputs(
            tensors if method.promotes_inputs else Float32View(tensors),
            base.to(torch.float32) if base is not None else None,
            fusion.resolved.params,
            fusion.resolved.tensor_params,
            name=task.name,
        )
    )
    return merged.to(task.dtype)


def _write(
    writer: ShardedWriter, progress: FusionProgress, task: TensorTask, result: torch.Tensor
) -> None:
    writer.write(task.name, result)
    progress.advance(task.nbytes)


def execute(
    fusion: Fusion, writer: ShardedWriter, progress: FusionProgress, stop: threading.Event
) -> None:
    """Load (one thread per model) -> merge -> write (behind); FusionStopped when `stop` is set.

    The three stages overlap, tensor by tensor; a write finishes before the next one starts.
    """
    progress.tensors_total = len(fusion.plan.tasks)
    progress.bytes_total = fusion.plan.total_bytes
    loaders = len(fusion.sources) + (fusion.base is not None)
    load_pool = ThreadPoolExecutor(loaders, thread_name_prefix="fuse-load")
    write_pool = ThreadPoolExecutor(1, thread_name_prefix="fuse-write")
    writing: Future[None] | None = None
    try:
        for pending in _pending(fusion, load_pool):
            if stop.is_set():
                raise FusionStopped("fusion stopped")
            task = pending.task
            result = _merge(fusion, task, pending.result())
            del pending
            if writing is not None:
                writing.result()
            writing = write_pool.submit(_write, writer, progress, task, result)
        if writing is not None:
            writing.result()
    finally:
        progress.end()
        load_pool.shutdown(wait=True, cancel_futures=True)
        write_pool.shutdown(wait=True, cancel_futures=True)
