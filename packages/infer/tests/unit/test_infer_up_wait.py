"""`/inference/up` answers within the network node's client timeout even when loading is slow."""

import pytest

from mlnode.common.lifecycle import AlreadyRunning, Phase
from mlnode.infer.schemas import InferenceUpRequest, UpPhase
from mlnode.infer.service import StillStarting
from mlnode.infer.testing.support import eventually


async def test_slow_start_is_retryable_and_a_retry_joins_it(make_service) -> None:
    service = await make_service(up_wait_s=0.5)
    slow = InferenceUpRequest(model="tiny", additional_args=["--start-delay", "2"])
    with pytest.raises(StillStarting) as starting:
        await service.up(slow)
    assert starting.value.status_code == 503 and starting.value.headers["Retry-After"] == "10"
    assert service.up_status().status is UpPhase.STARTING
    pid = service.inference_status().instances[0].pid
    await eventually(lambda: service.job.phase is Phase.RUNNING, timeout_s=20)
    again = await service.up(slow)
    assert again.status == "OK" and service.inference_status().instances[0].pid == pid
    assert service.loaded_model() == "tiny"
    with pytest.raises(AlreadyRunning):
        await service.up(InferenceUpRequest(model="other"))
