"""Engine liveness by scheduler progress, not only by `/health`.

An engine whose worker hangs may keep answering `/health` 200 for many minutes while nothing it
holds moves. vLLM's Prometheus text (`GET /metrics`) says whether requests wait or run
(`vllm:num_requests_waiting`, `vllm:num_requests_running`) and counts scheduler iterations
(`vllm:iteration_tokens_total_count`, the sample count of the iteration-tokens histogram, one per
engine step). Requests present and that count still for `stall_s`: the engine is stalled. An
idle engine never is. Before an engine has stepped at all, the judgement waits for the cold-start
allowance (first loads compile and warm up).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlnode.common.engines import EngineClient, EngineEndpoint
from mlnode.common.errors import EngineFailed

ITERATIONS = "vllm:iteration_tokens_total_count"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
_WANTED = (ITERATIONS, WAITING, RUNNING)


@dataclass(frozen=True)
class ProgressSample:
    """One read of an engine's progress figures (summed over its label sets)."""

    iterations: float
    waiting: float
    running: float


@dataclass(frozen=True)
class Verdict:
    """What the progress signal says about one engine now."""

    stalled: bool
    reason: str | None = None


def parse_progress(text: str) -> ProgressSample | None:
    """The progress figures from Prometheus text; None when the iteration counter is absent."""
    sums = dict.fromkeys(_WANTED, 0.0)
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in sums:
            continue
        try:
            sums[name] += float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        seen = seen or name == ITERATIONS
    if not seen:
        return None
    return ProgressSample(sums[ITERATIONS], sums[WAITING], sums[RUNNING])


class ProgressJudge:
    """Judges one engine process from successive samples; pure (the caller gives the clock)."""

    def __init__(self, started_at: float, stall_s: float, cold_start_s: float) -> None:
        self.started_at = started_at
        self.stall_s = stall_s
        self.cold_start_s = cold_start_s
        self._iterations: float | None = None
        self._busy = False
        self._still_since = started_at

    def observe(self, now: float, sample: ProgressSample) -> Verdict:
        """Feed one sample taken at `now` (monotonic seconds)."""
        busy = sample.waiting + sample.running > 0
        # The window opens at the first busy sample: requests may have come just before it.
        if not busy or not self._busy or sample.iterations != self._iterations:
            self._still_since = now
        self._iterations, self._busy = sample.iterations, busy
        still = now - self._still_since
        warm = sample.iterations > 0 or now - self.started_at >= self.cold_start_s
        if busy and warm and still >= self.stall_s:
            reason = (
                f"no scheduler progress for {still:.0f} s with {sample.waiting:.0f} request(s) "
                f"waiting and {sample.running:.0f} running ({ITERATIONS} unchanged)"
            )
            return Verdict(stalled=True, reason=reason)
        return Verdict(stalled=False)


async def read_progress(
    client: EngineClient, engine: EngineEndpoint, timeout_s: float, limit: int = 4 << 20
) -> ProgressSample | None:
    """GET `/metrics` (at most `limit` bytes); None when it cannot be read or lacks them."""
    try:
        answer = await client.get(engine, "/metrics", timeout_s=timeout_s, max_bytes=limit)
    except EngineFailed:
        return None
    if answer.status_code != 200:
        return None
    return parse_progress(answer.text)
