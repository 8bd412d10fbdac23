"""A fusion from request to committed checkpoint: open and check the models, then run the plan."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from mlnode.common.transport.api import TensorTransport
from mlnode.fuse.executor import Fusion, FusionProgress, execute
from mlnode.fuse.io.local import LocalSafetensors
from mlnode.fuse.io.peer import PeerSource
from mlnode.fuse.io.source import TensorSource
from mlnode.fuse.io.writer import ShardedWriter
from mlnode.fuse.methods.base import InvalidFusion
from mlnode.fuse.methods.registry import get_method
from mlnode.fuse.methods.validate import resolve
from mlnode.fuse.plan import build_plan
from mlnode.fuse.schemas import FuseRequest, ModelRef
from mlnode.fuse.settings import FuseSettings

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class NoTransport(RuntimeError):
    """A request names a peer but this node has no transport."""


@dataclass
class PreparedFusion:
    """A checked fusion, ready to run."""

    request: FuseRequest
    fusion: Fusion
    models: list[TensorSource]

    @property
    def output(self) -> Path:
        """Where the checkpoint goes."""
        return Path(self.request.output.path)

    def cancel(self) -> None:
        """End pulls from peers in progress (a stop): the worker then stops within a tick."""
        for model in self.models:
            if isinstance(model, PeerSource):
                model.cancel()

    def close(self) -> None:
        """Release every model's files."""
        for model in self.models:
            model.close()


def open_model(
    ref: ModelRef, task_id: str, transport: TensorTransport | None, settings: FuseSettings
) -> TensorSource:
    """A local checkpoint, or a peer's shared model for the task."""
    if ref.path is not None:
        return LocalSafetensors(Path(ref.path), mapped=settings.mapped_reads)
    assert ref.peer_id is not None
    if transport is None:
        raise NoTransport(f"peer {ref.peer_id}: this node has no transport")
    return PeerSource(
        transport, ref.peer_id, task_id, settings.peer_timeout_s, settings.peer_min_bytes_per_s
    )


def prepare(
    request: FuseRequest, transport: TensorTransport | None, settings: FuseSettings | None = None
) -> PreparedFusion:
    """Validate parameters, open every model and plan; raises before anything is written."""
    settings = settings or FuseSettings()
    method = get_method(request.method)
    resolved = resolve(
        method, request.params, [s.weight for s in request.sources], request.base is not None
    )
    if Path(request.output.path).exists():
        raise InvalidFusion(f"output {request.output.path} exists already", "output.path")
    models: list[TensorSource] = []
    try:
        base = (
            open_model(request.base, request.task_id, transport, settings) if request.base else None
        )
        models += [base] if base is not None else []
        sources = [open_model(s, request.task_id, transport, settings) for s in request.sources]
        models += sources
        out_dtype = DTYPES[request.output.dtype] if request.output.dtype else None
        plan = build_plan(models, request.keep_base, out_dtype)
    except BaseException:
        for model in models:
            model.close()
        raise
    fusion = Fusion(method, resolved, sources, base, plan, settings.prefetch_tensors)
    return PreparedFusion(request, fusion, models)


def companions_dir(request: FuseRequest) -> Path | None:
    """The directory whose config and tokenizer files go with the output (base first)."""
    refs = ([request.base] if request.base else []) + list(request.sources)
    for ref in refs:
        if ref.path is not None:
            path = Path(ref.path)
            return path if path.is_dir() else path.parent
    return None


def run(prepared: PreparedFusion, progress: FusionProgress, stop: threading.Event) -> Path:
    """Write the fused checkpoint; on any failure or stop, nothing appears at the output path."""
    request = prepared.request
    writer = ShardedWriter(
        prepared.output, prepared.fusion.plan.specs(), request.output.max_shard_size
    )
    try:
        execute(prepared.fusion, writer, progress, stop)
        output = writer.commit(companions_dir(request))
    except BaseException:
        writer.abort()
        raise
    finally:
        prepared.close()
    log.info("fused %d tensors into %s", progress.tensors_done, output)
    return output
