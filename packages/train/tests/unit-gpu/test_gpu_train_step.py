"""One inner training step on the GPU (bf16 autocast) matches the CPU step (fp32)."""

from collections.abc import Callable
from typing import Any

import pytest
import torch

from mlnode.train.data import TokenBatches, read_tokens
from mlnode.train.diloco.math import nesterov_outer_step, pseudo_gradient
from mlnode.train.inner import InnerLoop
from mlnode.train.model import build_model, load_tokenizer
from mlnode.train.schemas import TrainRequest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LR = 1e-3


def one_step(request: TrainRequest, device: torch.device) -> tuple[float, dict[str, torch.Tensor]]:
    model = build_model(request.model, request.seed)
    tokens = read_tokens(request.dataset, load_tokenizer(request.model, model))
    batch = TokenBatches(tokens, request.dataset.seq_len, 0, 1, request.seed).batch(0, 8)
    loop = InnerLoop(model, request.optim, device)
    before = {n: t.detach().clone() for n, t in loop.weights().items()}
    loss = loop.train_step(batch)
    grads = pseudo_gradient(before, loop.weights())
    after = {}
    for name, param in before.items():
        after[name], _ = nesterov_outer_step(
            param, grads[name], torch.zeros_like(param), lr=0.7, mu=0.9, nesterov=True
        )
    return loss, {n: t.float().cpu() for n, t in after.items()}


def test_gpu_step_matches_cpu_step(make_request: Callable[..., dict[str, Any]]) -> None:
    request = TrainRequest.model_validate(
        make_request(optim={"lr": LR, "total_steps": 10, "batch_size": 8, "micro_batch_size": 4})
    )

    cpu_loss, cpu_weights = one_step(request, torch.device("cpu"))
    gpu_loss, gpu_weights = one_step(request, torch.device("cuda"))

    assert gpu_loss == pytest.approx(cpu_loss, rel=2e-2)
    for name, cpu in cpu_weights.items():
        diff = (gpu_weights[name] - cpu).abs()
        # Adam's first step moves each weight by about lr; bf16 may flip the sign of tiny grads.
        assert float(diff.max()) <= 2 * 0.7 * 1.9 * LR + 1e-5, name
        assert float(diff.mean()) <= 0.5 * LR, name
