"""What a queued `/generate` job is estimated to hold in the engine, for the queue's byte bound.

The nonce bound alone let a few hundred decode validations with long claimed trajectories queue
up, each holding its parsed claims (+128 MiB measured for the longest). The estimate counts what
a job holds from its admission to its answer: its parsed request (nonces, claimed vectors and
trajectories) and the artifacts it produces. Per-item costs are CPython's, measured with
tracemalloc on parsed requests, rounded up: a claimed step is 8 B when its index is below 257
(cached ints) and 36 B otherwise, so 36 B is charged. The step scores of the job running now are
not counted: only one job runs at a time.
"""

from __future__ import annotations

from mlnode.pow.engine.checks import ProofShape
from mlnode.pow.poc.schemas import PocGenerateRequest

NONCE_BYTES = 40
ARTIFACT_BYTES = 700
STEP_BYTES = 36


def estimate_job_bytes(request: PocGenerateRequest, shape: ProofShape) -> int:
    """Bytes the job is estimated to hold while queued and running (see the module's notes)."""
    n = len(request.nonces)
    total = n * NONCE_BYTES
    if request.validation is not None:
        for artifact in request.validation.artifacts:
            steps = len(artifact.k_points_steps or ())
            total += ARTIFACT_BYTES + len(artifact.vector_b64) + STEP_BYTES * steps
    produced = ARTIFACT_BYTES + (STEP_BYTES * (shape.max_tokens + 1) if shape.decode else 0)
    return total + n * produced
