"""The PoW job: per GPU group, generate proofs and judge received batches until stopped.

Runs in worker threads (no FastAPI here). A received batch that fails to compute is reported in
`last_error` and skipped; it never stops a group's loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlnode.common.callbacks import DestinationSender, callback_url
from mlnode.common.lifecycle import describe_error
from mlnode.pow.v1.compute.engine import DistanceEngine
from mlnode.pow.v1.compute.nonces import NonceShare
from mlnode.pow.v1.schemas import PowInitRequest, PowPhase, ProofBatch, ValidatedBatch
from mlnode.pow.v1.stats import PowStats
from mlnode.pow.v1.validation import invalid_mask, judge

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.1


@dataclass
class JobContext:
    """What every group loop of one job shares."""

    init: PowInitRequest
    phase: Callable[[], PowPhase]
    validations: queue.Queue[ProofBatch]
    sender: DestinationSender
    stats: PowStats
    stop: threading.Event
    shares: list[NonceShare]
    #: Next share index per group; kept across re-inits of the same search, so no nonce repeats.
    resume: dict[int, int]


def run_group(job: JobContext, engine: DistanceEngine, share: NonceShare) -> None:
    """One group's loop: validate what was received first, generate while asked to."""
    while not job.stop.is_set():
        if validate_next(job, engine):
            continue
        if job.phase() is PowPhase.GENERATING:
            index = job.resume.get(share.group_id, 0)
            job.resume[share.group_id] = generate(job, engine, share, index)
        else:
            job.stop.wait(IDLE_WAIT_S)


def generate(job: JobContext, engine: DistanceEngine, share: NonceShare, index: int) -> int:
    """Generate until the phase changes, a batch awaits validation, or stop; the next index."""
    halt = threading.Event()
    batches = share.batches(engine.batch_size, index)
    for nonces, dist in engine.stream(
        job.init.public_key, batches, lambda: job.stop.is_set() or halt.is_set()
    ):
        index += len(nonces)
        report_proofs(job, nonces, dist)
        if job.phase() is not PowPhase.GENERATING or not job.validations.empty():
            halt.set()
    return index


def report_proofs(job: JobContext, nonces: np.ndarray, dist: np.ndarray) -> None:
    """Count a batch and send its proofs (dist < r_target) to `{url}/generated`."""
    keep = dist < job.init.r_target
    job.stats.computed(len(nonces), int(keep.sum()))
    if not keep.any():
        return
    batch = ProofBatch(
        public_key=job.init.public_key,
        block_hash=job.init.block_hash,
        block_height=job.init.block_height,
        nonces=[int(n) for n in nonces[keep]],
        dist=[float(d) for d in dist[keep]],
        node_id=job.init.node_id,
    )
    job.sender.submit_from_thread(callback_url(job.init.url, "generated"), batch.model_dump())


def validate_next(job: JobContext, engine: DistanceEngine) -> bool:
    """Judge one queued batch, if any; False when the queue was empty."""
    try:
        batch = job.validations.get_nowait()
    except queue.Empty:
        return False
    try:
        result = validate(job.init, engine, batch)
    except Exception as exc:  # a bad batch must not end the loop
        message = f"validation of a batch from {batch.public_key!r} failed: {describe_error(exc)}"
        log.exception("%s", message)
        job.stats.error(message)
        return True
    job.stats.validated(len(batch.nonces), result.fraud_detected)
    job.sender.submit_from_thread(callback_url(job.init.url, "validated"), result.model_dump())
    return True


def validate(init: PowInitRequest, engine: DistanceEngine, batch: ProofBatch) -> ValidatedBatch:
    """Recompute a batch with the prover's key and judge it."""
    if batch.block_hash != init.block_hash:
        raise ValueError(f"block hash {batch.block_hash!r} is no longer the loaded one")
    recomputed = engine.distances(batch.public_key, batch.nonces)
    n_invalid = int(invalid_mask(batch.dist, recomputed, init.r_target).sum())
    verdict = judge(n_invalid, len(batch.nonces), init.fraud_threshold)
    return ValidatedBatch(
        **batch.model_dump(exclude={"dist"}),
        dist=[float(d) for d in recomputed],
        received_dist=list(batch.dist),
        r_target=init.r_target,
        fraud_threshold=init.fraud_threshold,
        n_invalid=verdict.n_invalid,
        probability_honest=verdict.probability_honest,
        fraud_detected=verdict.fraud_detected,
    )
