"""With real GPUs: the service discovers them and gives each engine its own slice."""

from pathlib import Path

import httpx
import pytest
import torch

from mlnode.common.context import NodeContext
from mlnode.common.settings import NodeSettings
from mlnode.infer.schemas import InferenceUpRequest
from mlnode.infer.service import InferService
from mlnode.infer.testing.support import fake_settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA GPUs")


async def test_one_engine_per_discovered_gpu(tmp_path: Path) -> None:
    ctx = NodeContext(NodeSettings(_env_file=None, state_dir=tmp_path))
    service = InferService(fake_settings(tmp_path / "logs", gpus=None), ctx)
    ctx.gate.register(service)
    await service.open()
    try:
        await service.up(InferenceUpRequest(model="tiny"))
        instances = service.inference_status().instances
        assert len(instances) == torch.cuda.device_count()
        async with httpx.AsyncClient() as client:
            for i, instance in enumerate(instances):
                stats = await client.get(f"http://127.0.0.1:{instance.port}/control/stats")
                assert stats.json()["cuda_visible_devices"] == str(i)
    finally:
        await service.close()
