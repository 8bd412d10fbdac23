"""Fixtures of mlnode-infer's tests: InferServices that run the fake engine, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlnode.common.context import NodeContext
from mlnode.common.settings import NodeSettings
from mlnode.infer.service import InferService
from mlnode.infer.testing.support import fake_settings

ServiceFactory = Callable[..., Awaitable[InferService]]


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """Build and open InferServices; every one is closed after the test."""
    opened: list[InferService] = []

    async def make(**overrides: Any) -> InferService:
        ctx = NodeContext(NodeSettings(_env_file=None, state_dir=tmp_path))
        service = InferService(fake_settings(tmp_path / "logs", **overrides), ctx)
        ctx.gate.register(service)
        await service.open()
        opened.append(service)
        return service

    yield make
    for service in opened:
        await service.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain async HTTP client."""
    async with httpx.AsyncClient(timeout=30) as c:
        yield c
