"""`PocRunner`: the one loop that sends PoC chunks to the engine, and the state behind the routes.

One chunk at a time goes to the worker through `collective_rpc`, which the engine core runs
between two of its steps; chat requests keep being scheduled between chunks. While chat requests
are in flight the loop pauses `chat_yield` times each chunk's duration after it, so PoC takes at
most `1 / (1 + chat_yield)` of the engine's time. Mining and queued `/generate` jobs alternate
chunk by chunk, so a validation does not wait for mining to end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from mlnode.pow.engine.admission import estimate_job_bytes
from mlnode.pow.engine.callbacks import (
    CallbackSender,
    CallbackStats,
    InvalidCallbackUrl,
    destination,
)
from mlnode.pow.engine.checks import EngineFacts, ProofShape, proof_shape
from mlnode.pow.engine.errors import PocHttpError, conflict, invalid
from mlnode.pow.engine.jobs import (
    ChunkOutput,
    GenerateJob,
    MiningJob,
    ResultStore,
    without_non_finite,
)
from mlnode.pow.engine.protocol import RPC_DECODE, RPC_VECTORS, ChunkSpec, DecodeChunkResult
from mlnode.pow.engine.rpc import EngineRpc
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.engine.status import EngineStatus, QueueStats
from mlnode.pow.poc.schemas import (
    GenerateStatus,
    MiningPhase,
    PocArtifactOut,
    PocGenerateRequest,
    PocInitGenerateRequest,
    PocJobStatus,
    PocStatusConfig,
    PocStatusStats,
)

log = logging.getLogger(__name__)

Work = MiningJob | GenerateJob


async def compute_chunk(
    rpc: EngineRpc, shape: ProofShape, nonces: list[int], teacher: list[list[int]] | None
) -> ChunkOutput:
    """One chunk on the worker: vector artifacts, or decode trajectories (and scores)."""
    spec = ChunkSpec(
        block_hash=shape.block_hash,
        public_key=shape.public_key,
        nonces=nonces,
        seq_len=shape.seq_len,
        k_dim=shape.k_dim,
        stronger_rng=shape.stronger_rng,
        max_tokens=shape.max_tokens,
        codebook_sha256=shape.codebook_sha256,
        teacher=teacher,
    )
    if not shape.decode:
        rows = await rpc.call(RPC_VECTORS, spec.to_wire())
        return ChunkOutput([PocArtifactOut(nonce=n, vector_b64=b) for n, b in rows])
    result = DecodeChunkResult.from_wire(await rpc.call(RPC_DECODE, spec.to_wire()))
    artifacts = [
        PocArtifactOut(nonce=n, vector_b64="", k_points_steps=steps)
        for n, steps in zip(nonces, result.k_points_steps, strict=True)
    ]
    if result.scores:
        return ChunkOutput(artifacts, dict(zip(nonces, result.scores, strict=True)))
    return without_non_finite(artifacts)


class PocRunner:
    """Mining, queued jobs and their results for one engine."""

    def __init__(
        self,
        rpc: EngineRpc,
        facts: Callable[[], Awaitable[EngineFacts]],
        settings: PocEngineSettings,
        sender: CallbackSender,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rpc = rpc
        self._sleep = sleep
        self._facts = facts
        self._settings = settings
        self._sender = sender
        self._clock = clock
        self._mining: MiningJob | None = None
        self._jobs: deque[GenerateJob] = deque()
        self._live: dict[str, GenerateJob] = {}
        self._job_bytes: dict[str, int] = {}
        self._results = ResultStore(settings.result_ttl_s, settings.max_results, clock)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._turn_mining = False
        self._last_flush = clock()
        self._last_error: str | None = None
        self._non_finite = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop (inside the running event loop)."""
        self._task = asyncio.create_task(self._loop(), name="mlnode-poc-runner")

    async def _shape(
        self, req: PocInitGenerateRequest | PocGenerateRequest, n_nonces: int | None
    ) -> ProofShape:
        facts = await self._facts()
        return proof_shape(
            req.params,
            block_hash=req.block_hash,
            public_key=req.public_key,
            stronger_rng=req.poc_stronger_rng,
            batch_size=req.batch_size,
            n_nonces=n_nonces,
            facts=facts,
            settings=self._settings,
        )

    def _refuse_when_closing(self) -> None:
        if self._closing:
            raise PocHttpError(503, "the engine is shutting down")

    @staticmethod
    def _check_url(url: str | None) -> None:
        """422 naming `url` when httpx could not post to it (the schema checks only its prefix)."""
        if url is not None:
            try:
                destination(url)
            except InvalidCallbackUrl as exc:
                raise invalid(str(exc), "url") from None

    async def init_generate(self, req: PocInitGenerateRequest) -> None:
        """Start mining the request's share; 409 while mining."""
        self._refuse_when_closing()
        self._check_url(req.url)
        if self._mining is not None:
            raise conflict("Already generating: POST /api/v1/pow/stop first")
        shape = await self._shape(req, None)
        if self._mining is not None:
            raise conflict("Already generating: POST /api/v1/pow/stop first")
        self._mining = MiningJob(req, shape, self._settings.mining_buffer, self._clock)
        self._last_flush = self._clock()
        self._last_error = None  # reported until the next mining starts, not forever
        self._wake.set()

    async def submit(self, req: PocGenerateRequest) -> GenerateJob:
        """Queue a `/generate` job; 429 past the queued-nonce limit."""
        self._refuse_when_closing()
        self._check_url(req.url)
        shape = await self._shape(req, len(req.nonces))
        queued = sum(job.remaining for job in self._jobs)
        if queued + len(req.nonces) > self._settings.max_queued_nonces:
            raise PocHttpError(
                429,
                f"{queued} nonces are queued; {len(req.nonces)} more would pass the limit of "
                f"{self._settings.max_queued_nonces}",
                "nonces",
            )
        nbytes = self._admit_bytes(req, shape)
        job = GenerateJob(req, shape)
        self._jobs.append(job)
        self._live[job.request_id] = job
        self._job_bytes[job.request_id] = nbytes
        self._wake.set()
        return job

    def _admit_bytes(self, req: PocGenerateRequest, shape: ProofShape) -> int:
        """The job's estimated bytes; 413 past the bound alone, 429 past it with the queue."""
        limit = self._settings.max_queued_bytes
        nbytes = estimate_job_bytes(req, shape)
        param = "validation.artifacts" if req.validation is not None else "nonces"
        if nbytes > limit:
            raise PocHttpError(
                413,
                f"this job is estimated to hold {nbytes} bytes, more than "
                f"MLNODE_POC_MAX_QUEUED_BYTES ({limit}); send fewer nonces or shorter claims",
                param,
            )
        queued = sum(self._job_bytes.values())
        if queued + nbytes > limit:
            raise PocHttpError(
                429,
                f"queued jobs hold an estimated {queued} bytes; this one ({nbytes}) would pass "
                f"MLNODE_POC_MAX_QUEUED_BYTES ({limit}); retry when they are done",
                param,
            )
        return nbytes

    def job_status(self, request_id: str) -> PocJobStatus | None:
        """A live job's state or a finished job's answer (None when unknown or expired)."""
        live = self._live.get(request_id)
        if live is not None:
            return PocJobStatus(status=live.status, request_id=request_id)
        return self._results.get(request_id)

    def status(self) -> EngineStatus:
        """`/status`: phase, the mining config and counters, queue and callback counters."""
        queue = QueueStats(jobs=len(self._jobs), nonces=sum(j.remaining for j in self._jobs))
        mining = self._mining
        common: dict[str, Any] = {
            "queue": queue,
            "callbacks": self._sender.stats(),
            "last_error": self._last_error,
            "non_finite_dropped": self._non_finite,
        }
        if mining is None:
            return EngineStatus(status=MiningPhase.IDLE, **common)
        r, shape = mining.request, mining.shape
        config = PocStatusConfig(
            block_hash=r.block_hash,
            block_height=r.block_height,
            public_key=r.public_key,
            node_id=r.node_id,
            node_count=r.node_count,
            group_id=r.group_id,
            n_groups=r.n_groups,
            seq_len=shape.seq_len,
            k_dim=shape.k_dim,
        )
        stats = PocStatusStats(total_processed=mining.processed, nonces_per_second=mining.rate())
        return EngineStatus(
            status=MiningPhase.GENERATING,
            config=config,
            stats=stats,
            mining_dropped=mining.dropped,
            **common,
        )

    def callback_stats(self) -> CallbackStats:
        """Counters of the callback sender."""
        return self._sender.stats()

    async def stop(self, timeout_s: float = 60.0) -> None:
        """Stop mining, drop queued jobs and stored results; wait for the chunk in flight.

        Artifacts mined before the stop (including the chunk in flight) are still delivered.
        """
        mining, self._mining = self._mining, None
        for job in list(self._jobs):
            self._finish(job, job.fail("stopped by POST /stop"), store=False)
        self._jobs.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("a PoC chunk was still running %.0f s after /stop", timeout_s)
        if mining is not None:
            self._deliver_mined(mining)
        self._results.clear()

    def refuse_new_work(self) -> None:
        """From now on `/init/generate` and `/generate` answer 503, and no chunk is started."""
        self._closing = True
        mining, self._mining = self._mining, None
        for job in list(self._jobs):
            self._finish(job, job.fail("the engine is shutting down"), store=False)
        if mining is not None:
            self._deliver_mined(mining)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Refuse new work and stop (before the engine itself shuts down)."""
        self._closing = True
        await self.stop(timeout_s=timeout_s)

    async def shutdown(self) -> None:
        """Stop everything; the loop task ends and the callback senders close."""
        await self.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._sender.drain(timeout_s=2.0)
        await self._sender.close()

    def _next_work(self) -> Work | None:
        mining, job = self._mining, (self._jobs[0] if self._jobs else None)
        if mining is None or job is None:
            return mining or job
        self._turn_mining = not self._turn_mining
        return mining if self._turn_mining else job

    async def _loop(self) -> None:
        while True:
            work = self._next_work()
            if work is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._idle.clear()
            started = self._clock()
            try:
                await self._step(work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not end PoC for the engine's lifetime
                log.exception("PoC runner step failed")
                self._last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._idle.set()
            self._maybe_flush()
            if self._settings.chat_yield > 0 and self._rpc.chat_in_flight() > 0:
                await self._sleep((self._clock() - started) * self._settings.chat_yield)

    async def _step(self, work: Work) -> None:
        nonces = work.next_nonces()
        teacher = work.teacher(nonces) if isinstance(work, GenerateJob) else None
        try:
            output = await compute_chunk(self._rpc, work.shape, nonces, teacher)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine's errors arrive as plain exceptions
            self._chunk_failed(work, f"{type(exc).__name__}: {exc}")
            await self._sleep(self._settings.engine_retry_delay_s)
            if isinstance(work, GenerateJob) and work.judges and work.finished:
                await self._complete(work)
            return
        if isinstance(work, GenerateJob) and work.status is GenerateStatus.FAILED:
            return  # stopped while this chunk ran
        work.failures = 0
        work.done(nonces, output)
        self._non_finite += len(output.non_finite)
        if output.non_finite:
            log.warning("PoC nonces %s dropped: non-finite decode step", output.non_finite)
        if isinstance(work, GenerateJob) and work.finished:
            await self._complete(work)

    async def _complete(self, job: GenerateJob) -> None:
        if job.status is not GenerateStatus.FAILED:
            self._finish(job, await asyncio.to_thread(job.result), store=True)

    def _chunk_failed(self, work: Work, message: str) -> None:
        work.failures += 1
        self._last_error = message
        log.error("PoC chunk failed (%d in a row): %s", work.failures, message)
        if work.failures <= self._settings.engine_retries:
            return
        if isinstance(work, GenerateJob) and work.judges:
            work.skip(message)  # its nonces go unscored: excluded from the verdict
        elif isinstance(work, MiningJob):
            if self._mining is work:
                self._mining = None
            self._deliver_mined(work)
        else:
            self._finish(work, work.fail(f"engine error: {message}"), store=True)

    def _finish(self, job: GenerateJob, result: PocJobStatus, store: bool) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        self._live.pop(job.request_id, None)
        self._job_bytes.pop(job.request_id, None)
        if store:
            self._results.put(result)
        if not job.future.done():
            job.future.set_result(result)
        delivery = job.callback(result)
        if delivery is not None:
            self._sender.submit(*delivery)

    def _maybe_flush(self) -> None:
        mining = self._mining
        if mining is None or self._clock() - self._last_flush < self._settings.callback_interval_s:
            return
        self._last_flush = self._clock()
        self._deliver_mined(mining)

    def _deliver_mined(self, mining: MiningJob) -> None:
        body = mining.take_delivery()
        if body is not None and mining.request.url:
            url = f"{mining.request.url.rstrip('/')}/generated"
            self._sender.submit(url, body.model_dump(mode="json", exclude_none=True))
