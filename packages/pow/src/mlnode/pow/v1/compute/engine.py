"""Distances of nonces on one model copy; inputs are prepared ahead of the forward pass."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch

from mlnode.pow.v1.compute.devices import fit_batch_size
from mlnode.pow.v1.compute.distance import distances
from mlnode.pow.v1.compute.inputs import NonceBatch, make_batch, target_vector
from mlnode.pow.v1.compute.model import PowModel

PREFETCH_BATCHES = 2

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent per stage and nonces computed, summed over the engine's life."""

    input_s: float = 0.0
    forward_s: float = 0.0
    distance_s: float = 0.0
    nonces: float = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, amount: float) -> None:
        """Add `amount` to a stage's seconds (or to `nonces`)."""
        with self._lock:
            setattr(self, stage, getattr(self, stage) + amount)


@dataclass(frozen=True)
class Prepared:
    """A batch whose inputs are on their way to the model's input device."""

    batch: NonceBatch
    inputs: torch.Tensor

    def __getitem__(self, rows: slice) -> Prepared:
        """A slice of the batch's rows."""
        batch = NonceBatch(
            self.batch.nonces[rows], self.batch.inputs[rows], self.batch.permutations[rows]
        )
        return Prepared(batch, self.inputs[rows])


def free_memory(device: torch.device) -> int:
    """Bytes free for activations on `device` (host memory for the CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


class DistanceEngine:
    """Computes the distances of nonces for one public key on one `PowModel`."""

    def __init__(self, model: PowModel, batch_size: int, input_workers: int | None = None) -> None:
        """Fit the batch size to the free memory of the model's first device (or host).

        `input_workers` threads make inputs (numpy releases the GIL while it draws); by default
        one on CPU, where the forward pass needs the cores, and up to four next to a GPU.
        """
        self.model = model
        self.target = target_vector(model.block_hash, model.params.vocab_size)
        self.timings = Timings()
        device = model.input_device
        self.pin = device.type == "cuda"
        self.batch_size = fit_batch_size(batch_size, model.params, free_memory(device))
        if input_workers is None:
            input_workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 1
        self.input_workers = max(1, input_workers)
        self._pool = ThreadPoolExecutor(self.input_workers) if self.input_workers > 1 else None

    def close(self) -> None:
        """Stop the input threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def prepare(self, public_key: str, nonces: Sequence[int]) -> Prepared:
        """Inputs and permutations on the CPU (pinned for a fast copy to a GPU)."""
        start = time.perf_counter()
        batch = self._make_batch(public_key, nonces)
        inputs = torch.from_numpy(batch.inputs)
        if self.pin:
            inputs = inputs.pin_memory()
        self.timings.add("input_s", time.perf_counter() - start)
        return Prepared(batch, inputs)

    def _make_batch(self, public_key: str, nonces: Sequence[int]) -> NonceBatch:
        block_hash, params = self.model.block_hash, self.model.params
        if self._pool is None or len(nonces) < 2 * self.input_workers:
            return make_batch(block_hash, public_key, nonces, params)
        step = -(-len(nonces) // self.input_workers)
        parts = list(
            self._pool.map(
                lambda i: make_batch(block_hash, public_key, nonces[i : i + step], params),
                range(0, len(nonces), step),
            )
        )
        return NonceBatch(
            nonces=np.concatenate([p.nonces for p in parts]),
            inputs=np.concatenate([p.inputs for p in parts]),
            permutations=np.concatenate([p.permutations for p in parts]),
        )

    def run(self, prepared: Prepared) -> np.ndarray:
        """Forward pass and distances; a batch that runs out of GPU memory is halved for good."""
        try:
            return self._run(prepared)
        except torch.cuda.OutOfMemoryError:
            size = len(prepared.batch.nonces)
            if size == 1:
                raise
            torch.cuda.empty_cache()
            self.batch_size = max(1, min(self.batch_size, size // 2))
            log.warning("out of GPU memory at batch %d; batch size now %d", size, self.batch_size)
            half = size // 2
            return np.concatenate([self.run(prepared[:half]), self.run(prepared[half:])])

    def _run(self, prepared: Prepared) -> np.ndarray:
        start = time.perf_counter()
        inputs = prepared.inputs.to(self.model.input_device, non_blocking=True)
        logits = self.model.forward(inputs).cpu().numpy()
        mid = time.perf_counter()
        dist = distances(logits, prepared.batch.permutations, self.target)
        self.timings.add("forward_s", mid - start)
        self.timings.add("distance_s", time.perf_counter() - mid)
        self.timings.add("nonces", len(dist))
        return dist

    def distances(self, public_key: str, nonces: Sequence[int]) -> np.ndarray:
        """Distances of `nonces`, computed in chunks of the batch size."""
        chunks = [
            self.run(self.prepare(public_key, nonces[i : i + self.batch_size]))
            for i in range(0, len(nonces), self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.empty(0)

    def stream(
        self, public_key: str, batches: Iterator[list[int]], stop: Callable[[], bool]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`(nonces, distances)` per batch until `stop()`; the next inputs are made meanwhile."""
        ready: queue.Queue[Prepared | BaseException] = queue.Queue(PREFETCH_BATCHES)
        halt = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(public_key, batches, ready, stop, halt), daemon=True
        )
        producer.start()
        try:
            while not stop():
                try:
                    item = ready.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item.batch.nonces, self.run(item)
        finally:
            halt.set()
            producer.join()

    def _produce(
        self,
        public_key: str,
        batches: Iterator[list[int]],
        ready: queue.Queue[Prepared | BaseException],
        stop: Callable[[], bool],
        halt: threading.Event,
    ) -> None:
        try:
            for nonces in batches:
                item = self.prepare(public_key, nonces)
                while not (stop() or halt.is_set()):
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop() or halt.is_set():
                    return
        except Exception as exc:  # handed to the consumer, which raises it
            ready.put(exc)
