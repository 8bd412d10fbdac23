"""An app with two small worker services and a test router that starts them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from mlnode.api.app import create_app
from mlnode.api.settings import MLNodeSettings
from mlnode.api.testing import make_settings
from mlnode.common.context import NodeContext
from mlnode.common.deps import resolve_service
from mlnode.common.lifecycle import Service, ServiceKind, ServiceStatus, WorkerService


class SleepRequest(BaseModel):
    seconds: float = Field(ge=0, description="How long the job runs unless stopped.")
    fail: bool = Field(False, description="Raise inside the worker.")


class SleepService(WorkerService[SleepRequest]):
    kind = ServiceKind.POW
    join_timeout_s = 5.0

    def run(self, request: SleepRequest, stop: threading.Event) -> None:
        if request.fail:
            raise RuntimeError("worker exploded")
        stop.wait(request.seconds)


class TrainLike(SleepService):
    kind = ServiceKind.TRAIN


SERVICES = {"pow": SleepService, "train": TrainLike}
router = APIRouter(prefix="/test")


@router.post("/{name}/start")
async def start(name: str, body: SleepRequest, request: Request) -> ServiceStatus:
    return await resolve_service(request, SERVICES[name]).start(body)


def build(_: MLNodeSettings, ctx: NodeContext) -> list[Service[Any]]:
    return [SleepService(ctx.gate), TrainLike(ctx.gate)]


def make_app(tmp_path: Path, token: str | None = None) -> FastAPI:
    app = create_app(make_settings(tmp_path, node={"api_token": token}), services=build)
    app.include_router(router, prefix="/api/v1")
    return app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path)) as test_client:
        yield test_client
