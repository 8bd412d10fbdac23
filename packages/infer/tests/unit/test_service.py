"""InferService against real fake-engine processes: start-up, failures, health, restarts."""

import os
import signal
import socket

import httpx
import psutil
import pytest

from mlnode.common.errors import EngineFailed, InvalidRequest, Unavailable
from mlnode.common.lifecycle import AlreadyRunning, Phase
from mlnode.common.testing import wait_until_async
from mlnode.infer.schemas import InferenceUpRequest, UpPhase


def up_request(*args: str) -> InferenceUpRequest:
    return InferenceUpRequest(model="tiny", dtype="auto", additional_args=list(args))


def gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def port_of(service) -> str:
    return f"http://127.0.0.1:{service.settings.port}"


async def test_up_serves_then_down_leaves_no_process(make_service, client) -> None:
    service = await make_service()
    answer = await service.up(up_request("--max-model-len", "64"))
    assert answer.status == "OK"
    status = service.inference_status()
    assert status.status is UpPhase.RUNNING and status.healthy
    assert [i.state for i in status.instances] == ["healthy"]
    pid = status.instances[0].pid
    response = await client.post(f"{port_of(service)}/v1/completions", json={"prompt": "hi"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "ok"
    assert (await client.get(f"{port_of(service)}/health")).status_code == 200

    await service.down()
    assert gone(pid)
    assert service.up_status().status is UpPhase.STOPPED
    assert (await client.get(f"{port_of(service)}/health")).status_code == 503


async def test_engine_exiting_during_startup_fails_with_its_log(make_service) -> None:
    service = await make_service()
    with pytest.raises(EngineFailed) as info:
        await service.up(up_request("--fail-at-start"))
    assert "exited with code 1 during start-up" in info.value.message
    assert "told to fail at start-up" in info.value.message
    status = service.up_status()
    assert status.status is UpPhase.FAILED
    assert status.error is not None and "told to fail" in status.error
    assert not service.healthy() and not service.is_running()


async def test_engine_not_ready_in_time_is_killed(make_service) -> None:
    service = await make_service(startup_timeout_s=1.0)
    with pytest.raises(EngineFailed, match="did not answer /health within 1 s"):
        await service.up(up_request("--start-delay", "30"))
    assert gone(service.inference_status().instances[0].pid)


async def test_node_owned_flags_are_refused_and_nothing_runs(make_service) -> None:
    service = await make_service()
    with pytest.raises(InvalidRequest, match="--port"):
        await service.up(up_request("--port", "1234"))
    assert service.healthy() and not service.is_running()
    assert service.inference_status().instances == []


async def test_too_few_gpus_for_the_parallel_size_is_refused(make_service) -> None:
    service = await make_service(gpus=[0, 1])
    with pytest.raises(InvalidRequest, match="4 GPUs per instance"):
        await service.up(up_request("-tp", "2", "-pp", "2"))


async def test_same_up_while_running_is_ok_and_another_conflicts(make_service) -> None:
    service = await make_service()
    await service.up(up_request())
    assert (await service.up(up_request())).status == "OK"  # a client's retry
    with pytest.raises(AlreadyRunning):
        await service.up(up_request("--chunks", "2"))


async def test_async_up_reports_starting_then_running(make_service) -> None:
    service = await make_service()
    answer = await service.up_async(up_request("--start-delay", "1"))
    assert answer.status == "starting"
    assert service.up_status().status is UpPhase.STARTING
    await wait_until_async(lambda: service.up_status().status is UpPhase.RUNNING, timeout_s=15)


async def test_one_instance_per_gpu_group(make_service, client) -> None:
    service = await make_service(gpus=[0, 1, 2, 3])
    await service.up(up_request("--tensor-parallel-size=2"))
    status = service.inference_status()
    assert [i.gpus for i in status.instances] == [[0, 1], [2, 3]]
    assert status.tensor_parallel_size == 2
    seen = []
    for instance in status.instances:
        stats = await client.get(f"http://127.0.0.1:{instance.port}/control/stats")
        seen.append(stats.json()["cuda_visible_devices"])
    assert seen == ["0,1", "2,3"]


async def test_health_flap_takes_instance_out_and_back(make_service, client) -> None:
    service = await make_service()
    await service.up(up_request())
    engine = f"http://127.0.0.1:{service.inference_status().instances[0].port}"

    await client.post(f"{engine}/control/health", json={"ok": False})
    await wait_until_async(lambda: not service.healthy(), timeout_s=15)
    assert service.inference_status().instances[0].state == "unhealthy"
    assert "engine 0 is unhealthy" in (service.status().last_error or "")
    assert (await client.get(f"{port_of(service)}/health")).status_code == 503
    refused = await client.post(f"{port_of(service)}/v1/completions", json={})
    assert refused.status_code == 503

    await client.post(f"{engine}/control/health", json={"ok": True})
    await wait_until_async(service.healthy, timeout_s=15)
    assert (await client.post(f"{port_of(service)}/v1/completions", json={})).status_code == 200


async def test_dead_instance_is_restarted_up_to_the_limit(make_service, client) -> None:
    service = await make_service(max_restarts=1)
    await service.up(up_request())
    first_pid = service.inference_status().instances[0].pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> bool:
        instance = service.inference_status().instances[0]
        return bool(instance.restarts == 1 and instance.state == "healthy")

    await wait_until_async(restarted, timeout_s=15)
    second_pid = service.inference_status().instances[0].pid
    assert second_pid not in (None, first_pid)
    assert (await client.post(f"{port_of(service)}/v1/completions", json={})).status_code == 200

    os.kill(second_pid, signal.SIGKILL)
    await wait_until_async(lambda: service.job.phase is Phase.FAILED, timeout_s=15)
    assert "every engine instance exited" in (service.job.last_error or "")
    assert not service.healthy() and not service.is_running()
    assert service.inference_status().instances[0].state == "dead"


async def test_dead_instance_shows_in_status_and_the_other_serves(make_service, client) -> None:
    service = await make_service(gpus=[0, 1])
    await service.up(up_request())
    victim = service.inference_status().instances[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)

    await wait_until_async(
        lambda: service.inference_status().instances[0].state == "dead", timeout_s=15
    )
    assert not service.healthy()
    dead = service.inference_status().instances[0]
    assert dead.state == "dead" and dead.exit_code == -signal.SIGKILL
    assert dead.log_tail is not None and "fake engine for tiny" in dead.log_tail
    assert service.is_running()
    survivor = service.inference_status().instances[1].port
    for _ in range(3):
        response = await client.post(f"{port_of(service)}/v1/completions", json={})
        assert response.json()["port"] == survivor


async def test_close_stops_engines(make_service) -> None:
    service = await make_service()
    await service.up(up_request())
    pid = service.inference_status().instances[0].pid
    await service.close()
    assert gone(pid)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as c:
            await c.get(f"{port_of(service)}/health")


async def test_busy_inference_port_is_reported_and_retried_by_up(make_service) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    service = await make_service(port=port)
    assert service.healthy()
    assert "cannot be opened" in (service.inference_status().inference_port_error or "")
    with pytest.raises(Unavailable, match=f"inference port {port}"):
        await service.up(up_request())
    assert not service.is_running()

    blocker.close()
    await service.up(up_request())
    assert service.inference_status().inference_port_error is None
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{port_of(service)}/health")).status_code == 200
