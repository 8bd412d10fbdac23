"""Forced replay on CUDA with vLLM's default model runner (Model Runner V2 where Triton works).

Runs the engine in-process (vLLM's `LLM`) on a tiny Llama built here, in raw and processed
logprobs modes: the replay of an executor's sample, with another seed, gives the same tokens,
and the validator's comparison scores it >= 0.99 (GPU batches are not bit-exact).
Skipped without CUDA or without vLLM (the dev environment has neither; the image has both).
"""

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mlnode.infer.forcing.protocol import FORCED_IDS_XARG, PROCESSOR_FQCN
from mlnode.infer.testing import tiny_model
from mlnode.infer.testing.gonka import Position, compare

vllm = pytest.importorskip("vllm", reason="vLLM is not installed in this environment")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(params=["raw_logprobs", "processed_logprobs"])
def llm(request: pytest.FixtureRequest, tiny_llama: Path) -> Iterator[Any]:
    engine = vllm.LLM(
        model=str(tiny_llama),
        logits_processors=[PROCESSOR_FQCN],
        logprobs_mode=request.param,
        gpu_memory_utilization=0.2,
        max_model_len=256,
        enforce_eager=True,
    )
    yield engine
    del engine
    gc.collect()
    torch.cuda.empty_cache()


def _positions(output: Any) -> list[Position]:
    ids = output.token_ids
    return [
        Position(str(t), step[t].logprob, {str(k): v.logprob for k, v in step.items()})
        for t, step in zip(ids, output.logprobs, strict=True)
    ]


def test_replay_on_cuda_gives_the_executors_tokens(llm: Any) -> None:
    sampling = {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "logprobs": 5, "max_tokens": 24}
    prompt = {"prompt_token_ids": [2, 10, 11, 12, 13]}
    params = vllm.SamplingParams(seed=1, **sampling)
    executor = llm.generate([prompt], params)[0].outputs[0]
    free = llm.generate([prompt], vllm.SamplingParams(seed=2, **sampling))[0].outputs[0]
    assert free.token_ids != executor.token_ids

    forced = vllm.SamplingParams(
        seed=2, extra_args={FORCED_IDS_XARG: list(executor.token_ids)}, **sampling
    )
    # A free request beside the forced one: the batch holds both, the free one is untouched.
    replay, beside = (o.outputs[0] for o in llm.generate([prompt, prompt], [forced, params]))
    assert list(replay.token_ids[: len(executor.token_ids)]) == list(executor.token_ids)
    assert list(beside.token_ids) == list(executor.token_ids)
    verdict = compare(_positions(executor), _positions(replay))
    assert verdict.reason == "ok" and verdict.similarity >= 0.99
