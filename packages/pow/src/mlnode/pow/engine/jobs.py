"""The two kinds of PoC work and the store of finished jobs.

`MiningJob` walks the engine's nonce share (SPEC §2.10) and buffers its artifacts for the periodic
`/generated` callback. `GenerateJob` computes given nonces, then answers with artifacts or a
verdict (SPEC §2.11). Both hand out chunks of nonces and take back their results; the runner
decides when a chunk runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mlnode.pow.engine.checks import ProofShape
from mlnode.pow.poc.schemas import (
    GeneratedCallback,
    GenerateStatus,
    PocArtifactOut,
    PocEncoding,
    PocGenerateRequest,
    PocInitGenerateRequest,
    PocJobStatus,
    ValidatedCallback,
)
from mlnode.pow.poc.validation import StatTest, validate_trajectories, validate_vectors


@dataclass
class ChunkOutput:
    """What one chunk produced: artifacts, and per-step scores under teacher forcing.

    `non_finite` lists nonces whose trajectory held a non-finite step (`-1`): they carry no
    artifact, since the network node refuses a whole callback with such a step.
    """

    artifacts: list[PocArtifactOut]
    scores: dict[int, list[list[float]]] = field(default_factory=dict)
    non_finite: list[int] = field(default_factory=list)


def without_non_finite(artifacts: list[PocArtifactOut]) -> ChunkOutput:
    """Split off the trajectories holding a `-1` (non-finite) step (SPEC §3)."""
    kept = [a for a in artifacts if not a.k_points_steps or min(a.k_points_steps) >= 0]
    dropped = [a.nonce for a in artifacts if a.k_points_steps and min(a.k_points_steps) < 0]
    return ChunkOutput(kept, non_finite=dropped)


class MiningJob:
    """Mining of one `/init/generate`: an endless walk over the share, chunk by chunk."""

    def __init__(
        self,
        request: PocInitGenerateRequest,
        shape: ProofShape,
        buffer_cap: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self.shape = shape
        self.failures = 0
        self.last_error: str | None = None
        self.processed = 0
        self.dropped = 0
        self.non_finite = 0
        self._x = 0
        self._clock = clock
        self._started = clock()
        self._buffer: deque[PocArtifactOut] = deque()
        self._buffer_cap = buffer_cap

    def next_nonces(self) -> list[int]:
        """The next chunk of the share (the same again after a failure)."""
        return [self.request.nonce(x) for x in range(self._x, self._x + self.shape.chunk)]

    def done(self, nonces: list[int], output: ChunkOutput) -> None:
        """Account a computed chunk and buffer its artifacts (oldest dropped past the cap)."""
        self._x += len(nonces)
        self.processed += len(nonces)
        self.non_finite += len(output.non_finite)
        self._buffer.extend(output.artifacts)
        while len(self._buffer) > self._buffer_cap:
            self._buffer.popleft()
            self.dropped += 1

    def rate(self) -> float:
        """Nonces per second since mining started."""
        elapsed = self._clock() - self._started
        return self.processed / elapsed if elapsed > 0 else 0.0

    def take_delivery(self) -> GeneratedCallback | None:
        """The buffered artifacts as one `/generated` body (None when there are none)."""
        if not self._buffer:
            return None
        artifacts = list(self._buffer)
        self._buffer.clear()
        request = self.request
        return GeneratedCallback(
            public_key=request.public_key,
            block_hash=request.block_hash,
            block_height=request.block_height,
            node_id=request.node_id,
            artifacts=artifacts,
            encoding=PocEncoding(k_dim=self.shape.k_dim),
        )


class GenerateJob:
    """One `/generate`: given nonces, computed chunk by chunk, then judged when asked."""

    def __init__(self, request: PocGenerateRequest, shape: ProofShape) -> None:
        self.request_id = str(uuid.uuid4())
        self.request = request
        self.shape = shape
        self.status = GenerateStatus.QUEUED
        self.failures = 0
        self.last_error: str | None = None
        self.future: asyncio.Future[PocJobStatus] = asyncio.get_running_loop().create_future()
        self._pending = deque(
            request.nonces[i : i + shape.chunk] for i in range(0, len(request.nonces), shape.chunk)
        )
        self._artifacts: dict[int, PocArtifactOut] = {}
        self._scores: dict[int, list[list[float]]] = {}
        self.non_finite = 0
        #: Chunks given up after their retries (validation only): their nonces go unscored.
        self.skipped: list[str] = []
        received = request.validation.artifacts if request.validation else []
        self._claims = {a.nonce: a.k_points_steps or [] for a in received}

    @property
    def remaining(self) -> int:
        """Nonces not computed yet."""
        return sum(len(chunk) for chunk in self._pending)

    @property
    def finished(self) -> bool:
        """Every chunk is computed."""
        return not self._pending

    def next_nonces(self) -> list[int]:
        """The next chunk to compute."""
        self.status = GenerateStatus.RUNNING
        return list(self._pending[0])

    def teacher(self, nonces: list[int]) -> list[list[int]] | None:
        """The prover's trajectories of `nonces` (decode validation only)."""
        if not self.shape.decode or self.request.validation is None:
            return None
        return [self._claims.get(n, []) for n in nonces]

    def done(self, nonces: list[int], output: ChunkOutput) -> None:
        """Keep a computed chunk's results."""
        self._pending.popleft()
        self.non_finite += len(output.non_finite)
        self._artifacts.update({a.nonce: a for a in output.artifacts})
        self._scores.update(output.scores)

    def skip(self, message: str) -> None:
        """Give up on the current chunk; a verdict excludes its nonces (SPEC §2.13)."""
        if self._pending:  # empty when stopped while the chunk ran
            self._pending.popleft()
        self.failures = 0
        self.skipped.append(message)

    @property
    def judges(self) -> bool:
        """The request carries artifacts to validate."""
        return self.request.validation is not None

    def fail(self, message: str) -> PocJobStatus:
        """Finish as failed."""
        self._pending.clear()
        self.status = GenerateStatus.FAILED
        return PocJobStatus(status=self.status, request_id=self.request_id, error=message)

    def result(self) -> PocJobStatus:
        """The artifacts, or the verdict when the request carried `validation` (CPU work)."""
        self.status = GenerateStatus.COMPLETED
        artifacts = [self._artifacts[n] for n in self.request.nonces if n in self._artifacts]
        if self.request.validation is None:
            return PocJobStatus(
                status=self.status,
                request_id=self.request_id,
                artifacts=artifacts,
                encoding=PocEncoding(k_dim=self.shape.k_dim),
            )
        stat = self.request.stat_test or StatTest()
        nonces = self.request.nonces
        if self.shape.decode:
            scores = {n: torch.tensor(s, dtype=torch.float32) for n, s in self._scores.items()}
            outcome = validate_trajectories(
                scores, self._claims, stat, nonces, self.shape.max_tokens
            )
        else:
            computed = {a.nonce: a.vector_b64 for a in artifacts}
            received = {a.nonce: a.vector_b64 for a in self.request.validation.artifacts}
            outcome = validate_vectors(computed, received, self.shape.k_dim, stat, nonces)
        return PocJobStatus(
            status=self.status,
            request_id=self.request_id,
            n_total=outcome.n_total,
            n_mismatch=outcome.n_mismatch,
            mismatch_nonces=outcome.mismatch_nonces,
            p_value=outcome.p_value,
            fraud_detected=outcome.fraud_detected,
            n_nan_steps=outcome.n_nan_steps,
            n_excluded=outcome.n_excluded,
            excluded_nonces=outcome.excluded_nonces,
            no_verdict=outcome.no_verdict,
        )

    def callback(self, result: PocJobStatus) -> tuple[str, dict[str, object]] | None:
        """(url, body) of the `/generated` or `/validated` callback of a completed job."""
        url = self.request.url
        if url is None or result.status is not GenerateStatus.COMPLETED:
            return None
        r = self.request
        if result.artifacts is not None and result.encoding is not None:
            body = GeneratedCallback(
                request_id=self.request_id,
                public_key=r.public_key,
                block_hash=r.block_hash,
                block_height=r.block_height,
                node_id=r.node_id,
                artifacts=result.artifacts,
                encoding=result.encoding,
            )
            return f"{url.rstrip('/')}/generated", body.model_dump(mode="json", exclude_none=True)
        validated = ValidatedCallback(
            request_id=self.request_id,
            block_hash=r.block_hash,
            block_height=r.block_height,
            public_key=r.public_key,
            node_id=r.node_id,
            **result.verdict(),
        )
        return f"{url.rstrip('/')}/validated", validated.model_dump(mode="json")


class ResultStore:
    """Finished jobs by id, each readable for `ttl_s`, at most `cap` of them (oldest go first)."""

    def __init__(self, ttl_s: float, cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._cap = cap
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, PocJobStatus]] = OrderedDict()

    def put(self, status: PocJobStatus) -> None:
        """Keep a finished job's answer."""
        self._purge()
        self._items[status.request_id] = (self._clock() + self._ttl, status)
        while len(self._items) > self._cap:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> PocJobStatus | None:
        """The answer, unless unknown or expired."""
        self._purge()
        item = self._items.get(request_id)
        return item[1] if item else None

    def clear(self) -> None:
        """Forget every answer."""
        self._items.clear()

    def _purge(self) -> None:
        now = self._clock()
        while self._items and next(iter(self._items.values()))[0] <= now:
            self._items.popitem(last=False)
