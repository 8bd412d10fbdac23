"""The general plugin (`vllm.general_plugins` entry point): the post-sampling swap.

In `processed_*` logprobs modes vLLM computes the reported logprobs inside the sampler, after
the logits processors, so forcing by masking would report 0.0 for the forced token and -inf
for the rest. Instead the sampler's `sample` is wrapped: it samples as usual (computing the
model's processed logprobs), then the forced rows' sampled ids are overwritten, before vLLM
gathers the logprobs of the sampled ids (V1: v1/sample/sampler.py `Sampler.forward`; V2:
v1/worker/gpu/sample/sampler.py `Sampler.__call__`, where its own trace replay does the same).

vLLM loads general plugins in every process (API server, engine core, workers); `register`
checks the patch points and records the result, which the processor's readiness probe reports.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_V1_PARAMS = ("self", "logits", "sampling_metadata")
_V2_PARAMS = ("self", "logits", "expanded_idx_mapping", "idx_mapping", "idx_mapping_np")
_V2_NEEDED = frozenset({"idx_mapping_np", "seq_lens_upper_bound_np"})
_MARK = "__mlnode_forcing_swap__"

#: runner ("v1", "v2") -> None when the swap is installed, else why not.
_state: dict[str, str | None] = {}


def _v1_sampler() -> Any:
    from vllm.v1.sample.sampler import Sampler

    return Sampler


def _v2_sampler() -> Any:
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    return Sampler


def _wrap_v1(original: Callable[..., Any]) -> Callable[..., Any]:
    from mlnode.infer.forcing.v1 import find

    @functools.wraps(original)
    def sample(self: Any, logits: Any, sampling_metadata: Any, *args: Any, **kwargs: Any) -> Any:
        sampled, processed = original(self, logits, sampling_metadata, *args, **kwargs)
        proc = find(sampling_metadata.logitsprocs)
        if proc is not None and proc.swap_mode:
            proc.swap(sampled)
        return sampled, processed

    return sample


def _wrap_v2(original: Callable[..., Any]) -> Callable[..., Any]:
    from mlnode.infer.forcing.v2 import find

    signature = inspect.signature(original)

    @functools.wraps(original)
    def sample(self: Any, *args: Any, **kwargs: Any) -> Any:
        sampled, processed = original(self, *args, **kwargs)
        proc = find(self.logits_processors)
        if proc is not None and proc.swap_mode:
            bound = signature.bind(self, *args, **kwargs)
            proc.swap(
                sampled,
                bound.arguments["idx_mapping_np"],
                bound.arguments["seq_lens_upper_bound_np"],
            )
        return sampled, processed

    return sample


def _install(runner: str) -> str | None:
    """Wrap the runner's `Sampler.sample`; None on success, else the reason it cannot be."""
    try:
        sampler = _v1_sampler() if runner == "v1" else _v2_sampler()
    except Exception as exc:  # an engine build without this runner
        return f"cannot import the {runner} sampler: {exc!r}"
    original = getattr(sampler, "sample", None)
    if original is None:
        return f"the {runner} sampler has no sample()"
    if getattr(original, _MARK, False):
        return None
    params = list(inspect.signature(original).parameters)
    expected = _V1_PARAMS if runner == "v1" else _V2_PARAMS
    if tuple(params[: len(expected)]) != expected or (
        runner == "v2" and not _V2_NEEDED <= set(params)
    ):
        return f"the {runner} Sampler.sample signature changed: {params}"
    wrapped = (_wrap_v1 if runner == "v1" else _wrap_v2)(original)
    setattr(wrapped, _MARK, True)
    sampler.sample = wrapped
    return None


def swap_installed(runner: str) -> bool:
    """Whether the swap of `runner` is in place (installing it if `register` has not)."""
    if runner not in _state:
        _state[runner] = _install(runner)
    return _state[runner] is None


def readiness() -> tuple[bool, str]:
    """The self-check the probe reports: the V1 swap is required, V2's where that runner runs."""
    swap_installed("v1")
    swap_installed("v2")
    problems = [f"{runner}: {why}" for runner, why in sorted(_state.items()) if why]
    return _state.get("v1") is None, "; ".join(problems)


def register() -> None:
    """Entry point of the `vllm.general_plugins` group."""
    ready, problems = readiness()
    if problems:
        log.warning("mlnode forcing self-check: %s", problems)
    if not ready:
        log.error("mlnode forcing is unavailable: forced replays will be refused")
