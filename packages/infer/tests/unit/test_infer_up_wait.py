"""`/inference/up` answers within the network node's client timeout even when loading is slow."""

from mlnode.common.lifecycle import Phase
from mlnode.infer.schemas import InferenceUpRequest, UpPhase
from mlnode.infer.testing.support import eventually


async def test_slow_start_is_answered_starting_then_serves(make_service) -> None:
    service = await make_service(up_wait_s=0.5)
    answer = await service.up(
        InferenceUpRequest(model="tiny", additional_args=["--start-delay", "2"])
    )
    assert answer.status == "starting" and "up/status" in (answer.message or "")
    assert service.up_status().status is UpPhase.STARTING
    await eventually(lambda: service.job.phase is Phase.RUNNING, timeout_s=20)
    assert service.loaded_model() == "tiny"
