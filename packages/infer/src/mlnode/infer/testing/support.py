"""Helpers for tests and benchmarks that run InferService against the fake engine."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mlnode.common.context import NodeContext
from mlnode.common.settings import NodeSettings
from mlnode.common.testing.wait import wait_until_async
from mlnode.infer.engine import free_port
from mlnode.infer.service import InferService
from mlnode.infer.settings import InferSettings

ServiceFactory = Callable[..., Awaitable[InferService]]

FAKE_ENGINE = "mlnode.infer.testing.fake_engine"


def fake_settings(log_dir: Path, **overrides: Any) -> InferSettings:
    """Settings that start the fake engine with this interpreter, fast health checks, no GPU."""
    values: dict[str, Any] = {
        "python": sys.executable,
        "engine_module": FAKE_ENGINE,
        "gpus": [],
        "port": free_port("127.0.0.1"),
        "health_interval_s": 0.1,
        "health_timeout_s": 2.0,
        "stop_timeout_s": 3.0,
        "startup_timeout_s": 30.0,
        "max_restarts": 0,
        "log_dir": log_dir,
    }
    values.update(overrides)
    return InferSettings(_env_file=None, **values)


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """The name infer's tests knew `mlnode.common.testing.wait_until_async` by."""
    await wait_until_async(check, timeout_s=timeout_s, interval_s=0.05)


@asynccontextmanager
async def fake_services(state_dir: Path) -> AsyncIterator[ServiceFactory]:
    """Build and open InferServices over the fake engine; every one is closed on exit."""
    opened: list[InferService] = []

    async def make(**overrides: Any) -> InferService:
        ctx = NodeContext(NodeSettings(_env_file=None, state_dir=state_dir))
        service = InferService(fake_settings(state_dir / "logs", **overrides), ctx)
        ctx.gate.register(service)
        await service.open()
        opened.append(service)
        return service

    try:
        yield make
    finally:
        for service in opened:
            await service.close()
