"""The loaded model copies (one per GPU group), kept across re-inits with the same key."""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass

import torch

from mlnode.pow.v1.compute.model import PowModel
from mlnode.pow.v1.compute.params import ModelParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What the weights and their placement depend on."""

    block_hash: str
    params: ModelParams
    groups: tuple[tuple[str, ...], ...]
    cpu_matmul: str = "f32"


class ModelCache:
    """Builds model copies for a key, or returns the ones already built for it."""

    def __init__(self) -> None:
        """Empty cache."""
        self._lock = threading.Lock()
        self._key: ModelKey | None = None
        self._models: list[PowModel] = []
        self.builds = 0
        self.build_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        """Whether models are in memory."""
        return bool(self._models)

    def get(self, key: ModelKey) -> list[PowModel]:
        """The models for `key`, built (after freeing the old ones) when the key changed."""
        with self._lock:
            if key == self._key and self._models:
                log.info("PoW model for block %s reused", key.block_hash)
                return self._models
            self._release()
            cpu_matmul = torch.float16 if key.cpu_matmul == "f16" else torch.float32
            start = time.perf_counter()
            self._models = [
                PowModel(key.block_hash, key.params, [torch.device(d) for d in group], cpu_matmul)
                for group in key.groups
            ]
            self._key = key
            self.builds += 1
            self.build_seconds = time.perf_counter() - start
            log.info("PoW model built in %.2f s on %s", self.build_seconds, key.groups)
            return self._models

    def release(self) -> None:
        """Free the models (and their GPU memory)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if not self._models:
            return  # a full collection holds the GIL ~0.3 s: every POST /stop would stall the loop
        had_cuda = any(d.type == "cuda" for m in self._models for d in m.devices)
        self._models, self._key = [], None
        gc.collect()
        if had_cuda:
            torch.cuda.empty_cache()
