"""Engine liveness by scheduler progress: the metric parser, the judge, a hung test engine."""

from __future__ import annotations

import asyncio

import httpx

from mlnode.infer.liveness import ProgressJudge, ProgressSample, parse_progress
from mlnode.infer.schemas import InferenceUpRequest
from mlnode.infer.settings import InferSettings
from mlnode.infer.testing.support import eventually

#: The shape of vLLM 0.32's /metrics (v1/metrics/loggers.py), two engines' label sets.
VLLM_TEXT = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
vllm:num_requests_running{engine="0",model_name="m"} 4.0
vllm:iteration_tokens_total_bucket{engine="0",le="1.0",model_name="m"} 3.0
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 120.0
vllm:iteration_tokens_total_count{engine="1",model_name="m"} 30.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 9000.0
"""


def test_parse_sums_label_sets_and_needs_the_counter() -> None:
    assert parse_progress(VLLM_TEXT) == ProgressSample(iterations=150.0, waiting=3.0, running=4.0)
    assert parse_progress('vllm:num_requests_waiting{engine="0"} 2.0\n') is None
    assert parse_progress("garbage\nvllm:iteration_tokens_total_count x\n") is None


def busy(iterations: float) -> ProgressSample:
    return ProgressSample(iterations=iterations, waiting=1, running=0)


def test_idle_engine_is_never_stalled() -> None:
    judge = ProgressJudge(started_at=0, stall_s=60, cold_start_s=0)
    for t in range(0, 10_000, 10):
        assert not judge.observe(t, ProgressSample(5, 0, 0)).stalled


def test_still_counter_with_waiting_requests_is_stalled_after_the_window() -> None:
    judge = ProgressJudge(started_at=0, stall_s=60, cold_start_s=3600)
    assert not judge.observe(100, ProgressSample(5, 0, 0)).stalled
    assert not judge.observe(110, busy(5)).stalled
    assert not judge.observe(165, busy(5)).stalled
    verdict = judge.observe(171, busy(5))
    assert verdict.stalled and verdict.reason is not None and "61 s" in verdict.reason
    assert not judge.observe(172, busy(6)).stalled, "progress clears the verdict"


def test_moving_counter_is_not_stalled() -> None:
    judge = ProgressJudge(started_at=0, stall_s=60, cold_start_s=0)
    for t in range(0, 1000, 30):
        assert not judge.observe(t, busy(t)).stalled


def test_cold_start_allowance_before_the_first_step() -> None:
    judge = ProgressJudge(started_at=0, stall_s=60, cold_start_s=3600)
    assert not judge.observe(10, busy(0)).stalled
    assert not judge.observe(3000, busy(0)).stalled
    assert judge.observe(3600, busy(0)).stalled


async def test_hung_engine_is_unhealthy_while_health_answers(make_service, client) -> None:
    settings = {"liveness_interval_s": 0.1, "liveness_stall_s": 1.0, "liveness_cold_start_s": 0}
    service = await make_service(**settings)
    await service.up(InferenceUpRequest(model="tiny"))
    engine = f"http://127.0.0.1:{service.inference_status().instances[0].port}"
    await asyncio.sleep(2.5)
    assert service.healthy(), "an idle engine stays healthy"

    assert (await client.post(f"{engine}/control/hang", json={"hang": True})).status_code == 200
    proxy = f"http://127.0.0.1:{service.settings.port}/v1/completions"
    stuck = asyncio.create_task(client.post(proxy, json={"prompt": "hi"}))
    try:
        await eventually(lambda: not service.healthy(), timeout_s=20)
        instance = service.inference_status().instances[0]
        assert instance.state == "unhealthy" and instance.signal == "progress"
        assert instance.reason is not None and "waiting" in instance.reason
        assert (await client.get(f"{engine}/health")).status_code == 200

        await client.post(f"{engine}/control/hang", json={"hang": False})
        await eventually(service.healthy, timeout_s=20)
        assert service.inference_status().instances[0].signal == "health"
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
    assert isinstance(client, httpx.AsyncClient)


def first_stalled_read(judge: ProgressJudge, reads: list[tuple[float, ProgressSample]]) -> float:
    for now, sample in reads:
        if judge.observe(now, sample).stalled:
            return now
    raise AssertionError("never judged stalled")


def test_default_settings_report_a_hang_within_two_minutes() -> None:
    settings = InferSettings(_env_file=None)
    step = settings.liveness_interval_s
    reads = [step * i for i in range(1, 40)]
    # Busy and stepping, then the scheduler hangs just after the read at t=100.
    judge = ProgressJudge(0, settings.liveness_stall_s, settings.liveness_cold_start_s)
    samples = [(t, busy(min(t, 100.0))) for t in reads]
    assert first_stalled_read(judge, samples) - 100 + step < 120
    # Idle, then requests arrive just after the read at t=50 and the engine never steps.
    judge = ProgressJudge(0, settings.liveness_stall_s, settings.liveness_cold_start_s)
    samples = [(t, ProgressSample(9, 0, 0) if t <= 50 else busy(9)) for t in reads]
    assert first_stalled_read(judge, samples) - 50 < 120
