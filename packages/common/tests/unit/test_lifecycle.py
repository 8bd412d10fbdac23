import asyncio
import threading
from typing import Any, TypeVar

import pytest

from mlnode.common.errors import InvalidRequest, ServiceConflict
from mlnode.common.lifecycle import (
    AlreadyRunning,
    Phase,
    ServiceGate,
    ServiceKind,
    StoppedWhileStarting,
    WorkerService,
)
from mlnode.common.testing import wait_until_async


class Job:
    def __init__(
        self, fail: str | None = None, wait: bool = True, prepare: asyncio.Event | None = None
    ) -> None:
        self.fail = fail
        self.wait = wait
        self.prepare = prepare  # a slow preparation (a peer's listing) waits for this
        self.preparing = asyncio.Event()
        self.entered = threading.Event()


class JobService(WorkerService[Job]):
    kind = ServiceKind.POW
    join_timeout_s = 5.0

    async def _start(self, request: Job) -> None:
        if request.prepare is not None:
            request.preparing.set()
            await request.prepare.wait()
        if request.fail == "refuse":
            raise InvalidRequest("refused before running", param="fail")
        await super()._start(request)

    def run(self, request: Job, stop: threading.Event) -> None:
        request.entered.set()
        if request.fail:
            raise RuntimeError(request.fail)
        if request.wait:
            stop.wait(10)


class OtherService(JobService):
    kind = ServiceKind.TRAIN


ServiceT = TypeVar("ServiceT", bound=WorkerService[Any])


def registered(cls: type[ServiceT], gate: ServiceGate | None = None) -> ServiceT:
    """A service built for `gate` and registered with it, as `create_app` does."""
    gate = gate or ServiceGate()
    service = cls(gate)
    gate.register(service)
    return service


async def wait_phase(service: WorkerService[Job], phase: Phase) -> None:
    await wait_until_async(
        lambda: service.status().phase, lambda p: p is phase, timeout_s=2, what=phase
    )


async def test_start_runs_then_stop_ends_stopped() -> None:
    service = registered(JobService)
    status = await service.start(Job())
    assert status.running and status.phase is Phase.RUNNING and status.started_at is not None
    await service.stop()
    status = service.status()
    assert status.phase is Phase.STOPPED and not status.running and status.healthy


async def test_worker_exception_is_captured_in_status_and_health() -> None:
    service = registered(JobService)
    await service.start(Job(fail="boom in worker"))
    await wait_phase(service, Phase.FAILED)
    status = service.status()
    assert status.last_error == "RuntimeError: boom in worker"
    assert not service.healthy() and not status.healthy and not status.running


async def test_next_start_clears_the_failure() -> None:
    service = registered(JobService)
    await service.start(Job(fail="first"))
    await wait_phase(service, Phase.FAILED)
    await service.start(Job(wait=False))
    await wait_phase(service, Phase.FINISHED)
    assert service.healthy() and service.status().last_error is None


async def test_stop_after_failure_keeps_message_and_is_healthy() -> None:
    service = registered(JobService)
    await service.start(Job(fail="kept"))
    await wait_phase(service, Phase.FAILED)
    await service.stop()
    status = service.status()
    assert (
        status.phase is Phase.STOPPED
        and status.healthy
        and status.last_error == "RuntimeError: kept"
    )


async def test_refused_start_leaves_service_healthy_and_idle() -> None:
    service = registered(JobService)
    with pytest.raises(InvalidRequest):
        await service.start(Job(fail="refuse"))
    status = service.status()
    assert status.phase is Phase.STOPPED and status.healthy and not status.running
    assert status.last_error == "refused before running"


async def test_other_service_running_is_a_conflict_naming_it() -> None:
    gate = ServiceGate()
    pow_service, train_service = registered(JobService, gate), registered(OtherService, gate)
    await pow_service.start(Job())
    with pytest.raises(ServiceConflict) as caught:
        await train_service.start(Job())
    assert caught.value.status_code == 409 and "POW is running" in caught.value.message
    assert not train_service.is_running()
    await pow_service.stop()
    await train_service.start(Job())
    assert gate.running() is train_service
    await train_service.stop()


async def test_second_start_of_same_service_is_refused() -> None:
    service = registered(JobService)
    await service.start(Job())
    with pytest.raises(AlreadyRunning):
        await service.start(Job())
    await service.stop()


async def test_concurrent_starts_exactly_one_wins() -> None:
    gate = ServiceGate()
    a, b = registered(JobService, gate), registered(OtherService, gate)
    results = await asyncio.gather(a.start(Job()), b.start(Job()), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, ServiceConflict)]
    assert len(winners) == 1 and len(losers) == 1
    await a.stop()
    await b.stop()


def test_gate_refuses_two_instances_of_one_class() -> None:
    gate = ServiceGate()
    registered(JobService, gate)
    with pytest.raises(ValueError, match="registered already"):
        registered(JobService, gate)


async def test_a_service_starts_only_once_registered_with_its_own_gate() -> None:
    gate = ServiceGate()
    service = JobService(gate)
    with pytest.raises(RuntimeError, match="not registered"):
        await service.start(Job())
    with pytest.raises(ValueError, match="another gate"):
        ServiceGate().register(service)
    assert gate.services == ()


def test_gate_get_finds_service_by_class() -> None:
    gate = ServiceGate()
    service = registered(JobService, gate)
    assert gate.get(JobService) is service
    with pytest.raises(LookupError):
        gate.get(OtherService)


class StubbornService(WorkerService[threading.Event]):
    """A worker that ignores `stop` until the test lets it go (a pull stuck in a slow peer)."""

    kind = ServiceKind.FUSE
    join_timeout_s = 0.2

    def run(self, request: threading.Event, stop: threading.Event) -> None:
        request.wait(10)


async def test_a_worker_that_outlives_stop_keeps_the_gate_until_it_ends() -> None:
    gate = ServiceGate()
    stubborn, other = registered(StubbornService, gate), registered(OtherService, gate)
    let_go = threading.Event()
    await stubborn.start(let_go)
    await stubborn.stop()
    assert stubborn.status().phase is Phase.STOPPING and stubborn.is_running()
    with pytest.raises(ServiceConflict):
        await other.start(Job())
    with pytest.raises(AlreadyRunning):
        await stubborn.start(threading.Event())
    let_go.set()
    await wait_phase(stubborn, Phase.STOPPED)  # type: ignore[arg-type]
    await other.start(Job())
    await other.stop()


async def test_a_stop_during_preparation_wins_and_the_gate_goes_to_the_next_service() -> None:
    gate = ServiceGate()
    fuse, train = registered(JobService, gate), registered(OtherService, gate)
    release = asyncio.Event()
    job = Job(prepare=release)
    starting = asyncio.create_task(fuse.start(job))
    await job.preparing.wait()
    await fuse.stop()
    assert fuse.status().phase is Phase.STOPPED
    await train.start(Job())
    release.set()
    with pytest.raises(StoppedWhileStarting) as caught:
        await starting
    assert caught.value.status_code == 409
    assert not job.entered.is_set() and not fuse.is_running()
    assert fuse.status().phase is Phase.STOPPED and fuse.status().last_error is None
    assert gate.running() is train
    await train.stop()


async def test_a_start_stopped_then_replaced_does_not_touch_the_new_job() -> None:
    service = registered(JobService)
    release = asyncio.Event()
    old = asyncio.create_task(service.start(Job(fail="refuse", prepare=release)))
    await asyncio.sleep(0)
    await service.stop()
    await service.start(Job())
    release.set()
    with pytest.raises(InvalidRequest):
        await old
    status = service.status()
    assert status.phase is Phase.RUNNING and status.last_error is None
    await service.stop()
