"""`PocRunner` over a stand-in engine whose chunks go through the real PoC artifact maths.

The stand-in replaces only the model forward (a seeded hidden state per nonce); the runner's
scheduling, nonce shares, callbacks, validation and stop are the real ones.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import torch

from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.pow.engine.admission import estimate_job_bytes
from mlnode.pow.engine.callbacks import CallbackSender
from mlnode.pow.engine.checks import EngineFacts
from mlnode.pow.engine.errors import PocHttpError
from mlnode.pow.engine.jobs import ResultStore
from mlnode.pow.engine.protocol import RPC_DECODE, RPC_VECTORS, ChunkSpec, DecodeChunkResult
from mlnode.pow.engine.runner import PocRunner
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.poc.artifacts import artifacts_from_hidden
from mlnode.pow.poc.decode import Codebook
from mlnode.pow.poc.schemas import (
    GenerateStatus,
    MiningPhase,
    PocGenerateRequest,
    PocInitGenerateRequest,
    PocJobStatus,
)

HIDDEN = 64
FACTS = EngineFacts(("m",), "Qwen3ForCausalLM", hidden=HIDDEN, max_model_len=2048)


class StandInEngine:
    """Answers vector chunks from a per-nonce seeded hidden state; can fail or be slow."""

    def __init__(
        self, failures: int = 0, delay_s: float = 0.0, broken: frozenset[int] = frozenset()
    ) -> None:
        self.chunks: list[list[int]] = []
        self.failures = failures
        self.broken = broken
        self.delay_s = delay_s
        self.chat = 0

    async def call(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        assert method == RPC_VECTORS and payload is not None
        spec = ChunkSpec.from_wire(payload)
        self.chunks.append(spec.nonces)
        await asyncio.sleep(self.delay_s)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("worker hiccup")
        if self.broken & set(spec.nonces):
            raise RuntimeError("chunk fails on every try")
        hidden = torch.stack(
            [torch.randn(HIDDEN, generator=torch.Generator().manual_seed(n)) for n in spec.nonces]
        )
        found = artifacts_from_hidden(
            hidden, spec.block_hash, spec.public_key, spec.nonces, spec.k_dim
        )
        return [[a.nonce, a.vector_b64] for a in found]

    def chat_in_flight(self) -> int:
        return self.chat


async def facts() -> EngineFacts:
    return FACTS


def settings(**overrides: Any) -> PocEngineSettings:
    values: dict[str, Any] = {
        "callback_interval_s": 0.05,
        "callback_backoff_s": 0.01,
        "engine_retry_delay_s": 0.0,
        **overrides,
    }
    return PocEngineSettings(**values)


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    started = CallbackReceiver().start()
    yield started
    started.stop()


async def runner_for(engine: StandInEngine, config: PocEngineSettings, **kwargs: Any) -> PocRunner:
    sender = CallbackSender(config)
    sender.start()
    runner = PocRunner(engine, facts, config, sender, **kwargs)
    runner.start()
    return runner


BLOCK = {"block_hash": "bh", "block_height": 5, "public_key": "pk", "node_id": 1}


def mining(url: str | None, **extra: Any) -> PocInitGenerateRequest:
    body = {**BLOCK, "node_count": 2, "batch_size": 3, "params": {"model": "m", "seq_len": 4}}
    return PocInitGenerateRequest.model_validate({**body, "url": url, **extra})


def generate(nonces: list[int], **extra: Any) -> PocGenerateRequest:
    body = {**BLOCK, "nonces": nonces, "batch_size": 2, "params": {"model": "m", "seq_len": 4}}
    return PocGenerateRequest.model_validate({**body, **extra})


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_mining_walks_the_share_and_every_mined_artifact_is_delivered(
    receiver: CallbackReceiver,
) -> None:
    engine = StandInEngine()
    runner = await runner_for(engine, settings())
    await runner.init_generate(mining(receiver.url, group_id=1, n_groups=2))
    with pytest.raises(PocHttpError) as again:
        await runner.init_generate(mining(receiver.url))
    assert again.value.status == 409

    def processed() -> int:
        stats = runner.status().stats
        return stats.total_processed if stats is not None else 0

    await until(lambda: processed() >= 12)
    status = runner.status()
    assert status.status is MiningPhase.GENERATING and status.config is not None
    assert (status.config.group_id, status.config.n_groups) == (1, 2)
    await runner.stop()
    assert runner.status().status is MiningPhase.IDLE
    await until(lambda: runner.callback_stats().pending == 0)
    delivered = [a["nonce"] for b in receiver.bodies("/generated") for a in b["artifacts"]]
    # node 1 of 2, engine 1 of 2: 1 + 1*2 + x*4
    assert delivered == [3 + 4 * x for x in range(len(delivered))]
    assert len(delivered) == sum(len(c) for c in engine.chunks)
    first = receiver.bodies("/generated")[0]
    assert {k: first[k] for k in ("public_key", "block_hash", "block_height", "node_id")} == {
        "public_key": "pk",
        "block_hash": "bh",
        "block_height": 5,
        "node_id": 1,
    }
    assert "request_id" not in first and first["encoding"]["k_dim"] == 12
    await runner.shutdown()


async def test_jobs_alternate_with_mining_and_answer_in_request_order() -> None:
    engine = StandInEngine()
    runner = await runner_for(engine, settings())
    await runner.init_generate(mining(None))
    job = await runner.submit(generate([9, 4, 7, 1, 30]))
    result = await asyncio.wait_for(job.future, 10)
    assert result.status is GenerateStatus.COMPLETED and result.artifacts is not None
    assert [a.nonce for a in result.artifacts] == [9, 4, 7, 1, 30]
    job_chunks = [c for c in engine.chunks if c in ([9, 4], [7, 1], [30])]
    assert job_chunks == [[9, 4], [7, 1], [30]]
    first_job_chunk = engine.chunks.index([9, 4])
    assert engine.chunks[first_job_chunk + 1] not in job_chunks, "mining got no turn"
    assert runner.job_status(job.request_id) == result
    await runner.shutdown()


async def test_validation_counts_altered_vectors_and_calls_back(
    receiver: CallbackReceiver,
) -> None:
    runner = await runner_for(StandInEngine(), settings())
    honest = await asyncio.wait_for((await runner.submit(generate([1, 2, 3, 4]))).future, 10)
    assert honest.artifacts is not None
    received = [a.model_dump() for a in honest.artifacts]
    received[1]["vector_b64"] = received[0]["vector_b64"]
    received[3]["vector_b64"] = "not base64"
    body = generate(
        [1, 2, 3, 4],
        validation={"artifacts": received},
        stat_test={"dist_threshold": 0.02, "p_mismatch": 0.1, "p_value_threshold": 0.05},
        url=receiver.url,
    )
    job = await runner.submit(body)
    verdict = await asyncio.wait_for(job.future, 10)
    assert (verdict.n_total, verdict.n_mismatch, verdict.mismatch_nonces) == (4, 2, [2, 4])
    [callback] = await asyncio.to_thread(
        receiver.wait_for, "/validated", lambda b: len(b) == 1, timeout_s=10
    )
    assert callback["request_id"] == job.request_id and callback["n_mismatch"] == 2
    assert callback["fraud_detected"] == verdict.fraud_detected
    await runner.shutdown()


async def test_the_queue_is_bounded_in_nonces() -> None:
    runner = await runner_for(StandInEngine(delay_s=0.2), settings(max_queued_nonces=5))
    await runner.submit(generate([1, 2, 3, 4]))
    with pytest.raises(PocHttpError) as refused:
        await runner.submit(generate([5, 6]))
    assert (refused.value.status, refused.value.param) == (429, "nonces")
    await runner.shutdown()


async def test_a_url_httpx_cannot_post_to_is_refused_naming_it() -> None:
    runner = await runner_for(StandInEngine(), settings())
    for call in (
        runner.init_generate(mining("http://h:x")),
        runner.submit(generate([1], url="http://xn--a")),
    ):
        with pytest.raises(PocHttpError) as refused:
            await call
        assert (refused.value.status, refused.value.param) == (422, "url")
    assert runner.status().status is MiningPhase.IDLE and runner.status().queue.jobs == 0
    await runner.shutdown()


async def test_a_failed_chunk_is_retried_with_the_same_nonces() -> None:
    engine = StandInEngine(failures=2)
    runner = await runner_for(engine, settings(engine_retries=2))
    result = await asyncio.wait_for((await runner.submit(generate([8, 6]))).future, 10)
    assert result.status is GenerateStatus.COMPLETED
    assert engine.chunks == [[8, 6]] * 3
    await runner.shutdown()


async def test_a_chunk_failing_past_its_retries_fails_the_job_with_the_cause() -> None:
    engine = StandInEngine(failures=5)
    runner = await runner_for(engine, settings(engine_retries=1))
    job = await runner.submit(generate([8]))
    result = await asyncio.wait_for(job.future, 10)
    assert result.status is GenerateStatus.FAILED and "worker hiccup" in (result.error or "")
    assert runner.status().last_error is not None
    assert runner.job_status(job.request_id) == result
    await runner.shutdown()


async def _judge_with_broken_chunks(
    broken: frozenset[int], receiver: CallbackReceiver
) -> tuple[PocJobStatus, dict[str, Any]]:
    nonces = list(range(20))
    honest = await runner_for(StandInEngine(), settings())
    computed = await asyncio.wait_for((await honest.submit(generate(nonces))).future, 10)
    await honest.shutdown()
    assert computed.artifacts is not None
    received = [a.model_dump() for a in computed.artifacts]
    received[0]["vector_b64"] = received[1]["vector_b64"]
    runner = await runner_for(StandInEngine(broken=broken), settings(engine_retries=1))
    body = generate(
        nonces, validation={"artifacts": received}, url=receiver.url, stat_test={"p_mismatch": 0.1}
    )
    verdict = await asyncio.wait_for((await runner.submit(body)).future, 10)
    [callback] = await asyncio.to_thread(
        receiver.wait_for, "/validated", lambda b: len(b) == 1, timeout_s=10
    )
    await runner.shutdown()
    return verdict, callback


async def test_a_chunk_failing_past_its_retries_is_excluded_from_a_verdict(
    receiver: CallbackReceiver,
) -> None:
    verdict, callback = await _judge_with_broken_chunks(frozenset({8}), receiver)
    assert verdict.status is GenerateStatus.COMPLETED
    assert (verdict.n_total, verdict.n_excluded, verdict.excluded_nonces) == (18, 2, [8, 9])
    assert (verdict.n_mismatch, verdict.mismatch_nonces) == (1, [0])
    assert verdict.fraud_detected is False and verdict.no_verdict is None
    assert callback["n_excluded"] == 2 and callback["excluded_nonces"] == [8, 9]
    assert callback["n_total"] == 18 and callback["fraud_detected"] is False


async def test_more_than_a_tenth_unscored_calls_back_without_a_verdict(
    receiver: CallbackReceiver,
) -> None:
    verdict, callback = await _judge_with_broken_chunks(frozenset({8, 13}), receiver)
    assert (verdict.n_total, verdict.excluded_nonces) == (16, [8, 9, 12, 13])
    assert verdict.p_value is None and verdict.fraud_detected is None
    assert callback["fraud_detected"] is None and callback["p_value"] is None
    assert "4 of 20" in callback["no_verdict"]


async def test_chat_in_flight_makes_the_loop_yield_in_proportion() -> None:
    pauses: list[float] = []
    now = [0.0]

    class TimedEngine(StandInEngine):
        async def call(self, method: str, payload: dict[str, Any] | None = None) -> Any:
            now[0] += 0.25  # each chunk takes 0.25 s of the test's clock
            return await super().call(method, payload)

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    engine = TimedEngine()
    engine.chat = 2
    config = settings(chat_yield=2.0)
    runner = await runner_for(engine, config, clock=lambda: now[0], sleep=sleep)
    await asyncio.wait_for((await runner.submit(generate([1, 2]))).future, 10)
    assert pauses and all(p == pytest.approx(0.5) for p in pauses)
    engine.chat = 0
    pauses.clear()
    await asyncio.wait_for((await runner.submit(generate([3, 4]))).future, 10)
    assert pauses == []
    await runner.shutdown()


async def test_stop_drops_queued_jobs_and_stored_results() -> None:
    runner = await runner_for(StandInEngine(delay_s=0.05), settings())
    done = await runner.submit(generate([1]))
    await asyncio.wait_for(done.future, 10)
    queued = [await runner.submit(generate([n, n + 1])) for n in (10, 20, 30)]
    await runner.stop()
    outcomes: list[PocJobStatus] = [await asyncio.wait_for(j.future, 10) for j in queued]
    assert GenerateStatus.FAILED in {o.status for o in outcomes}
    assert runner.job_status(done.request_id) is None
    assert runner.status().queue.jobs == 0
    after = await asyncio.wait_for((await runner.submit(generate([7]))).future, 10)
    assert after.status is GenerateStatus.COMPLETED, "the runner must survive a stop"
    assert runner.status().last_error is None
    await runner.shutdown()


def test_results_expire_and_are_capped() -> None:
    now = [0.0]
    store = ResultStore(ttl_s=10, cap=2, clock=lambda: now[0])
    for i in range(3):
        store.put(PocJobStatus(status=GenerateStatus.COMPLETED, request_id=str(i)))
    assert store.get("0") is None and store.get("2") is not None
    now[0] = 11.0
    assert store.get("2") is None


class NonFiniteDecoder:
    """Answers decode chunks with fixed trajectories; every other nonce hits a -1 step."""

    async def call(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        assert method == RPC_DECODE and payload is not None
        await asyncio.sleep(0.01)
        nonces = ChunkSpec.from_wire(payload).nonces
        steps = [[n % 16, -1 if bad(n) else 3] for n in nonces]
        return DecodeChunkResult(k_points_steps=steps).to_wire()

    def chat_in_flight(self) -> int:
        return 0


def bad(nonce: int) -> bool:
    return (nonce // 2) % 2 == 1


async def test_no_minus_one_is_ever_delivered_and_drops_are_counted(
    receiver: CallbackReceiver,
) -> None:
    codebook = Codebook(torch.eye(16, HIDDEN), "0" * 64)

    async def decode_facts() -> EngineFacts:
        return EngineFacts(("m",), "Qwen3ForCausalLM", HIDDEN, 2048, codebook=codebook)

    config = settings()
    sender = CallbackSender(config)
    sender.start()
    runner = PocRunner(NonFiniteDecoder(), decode_facts, config, sender)
    runner.start()
    params = {"model": "m", "seq_len": 4, "decode": True, "max_tokens": 1}
    await runner.init_generate(mining(receiver.url, params=params, batch_size=4))
    await until(lambda: runner.status().non_finite_dropped >= 6)
    await runner.stop()
    dropped = runner.status().non_finite_dropped
    batches = await asyncio.to_thread(
        receiver.wait_for,
        "/generated",
        lambda b: sum(len(x["artifacts"]) for x in b) >= dropped,
        10,
    )
    delivered = [a for b in batches for a in b["artifacts"]]
    assert len(delivered) == dropped  # each chunk of 4 share nonces holds 2 bad ones
    assert all(min(a["k_points_steps"]) >= 0 and not bad(a["nonce"]) for a in delivered)


def decode_validation(n: int, steps: int) -> PocGenerateRequest:
    claims = [{"nonce": i, "vector_b64": "", "k_points_steps": [3] * steps} for i in range(n)]
    params = {"model": "m", "seq_len": 4, "decode": True, "max_tokens": 8}
    body = {**BLOCK, "nonces": list(range(n)), "batch_size": 2, "params": params}
    return PocGenerateRequest.model_validate({**body, "validation": {"artifacts": claims}})


def test_job_bytes_count_claims_and_results() -> None:
    from mlnode.pow.engine.admission import ARTIFACT_BYTES, NONCE_BYTES, STEP_BYTES
    from mlnode.pow.engine.checks import ProofShape

    shape = ProofShape("bh", "pk", 4, 12, False, 8, 2, None)
    n, steps = 3, 100
    per_nonce = NONCE_BYTES + 2 * ARTIFACT_BYTES + STEP_BYTES * (steps + 9)
    assert estimate_job_bytes(decode_validation(n, steps), shape) == n * per_nonce


async def test_the_queue_is_bounded_in_estimated_bytes() -> None:
    config = settings(max_queued_bytes=150_000)  # a vector job: 740 B per nonce
    runner = await runner_for(StandInEngine(delay_s=0.5), config)
    shape_free = generate([1, 2, 3, 4])
    await runner.submit(shape_free)
    with pytest.raises(PocHttpError) as too_big:
        await runner.submit(generate(list(range(300)), validation=None))
    assert too_big.value.status == 413 and "MLNODE_POC_MAX_QUEUED_BYTES" in too_big.value.message
    await runner.submit(generate(list(range(100, 200))))
    with pytest.raises(PocHttpError) as full:
        await runner.submit(generate(list(range(200, 300))))
    assert (full.value.status, full.value.param) == (429, "nonces")
    assert "MLNODE_POC_MAX_QUEUED_BYTES" in full.value.message
    await runner.stop()
    await runner.submit(generate(list(range(200, 300))))  # stopped jobs no longer count
    await runner.shutdown()
