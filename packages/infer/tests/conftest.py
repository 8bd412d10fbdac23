"""Fixtures of mlnode-infer's tests: InferServices that run the fake engine, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mlnode.infer.testing.support import ServiceFactory, fake_services


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """Build and open InferServices; every one is closed after the test."""
    async with fake_services(tmp_path) as make:
        yield make


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain async HTTP client."""
    async with httpx.AsyncClient(timeout=30) as c:
        yield c
