"""Forcing on vLLM's V1 model runner (`vllm.v1.sample.logits_processor` interface).

In raw logprobs modes the processor masks every logit but the forced one: the sampler takes the
reported logprobs before any processor runs (v1/sample/sampler.py, `Sampler.forward`), so they
stay the model's own. In processed modes masking would show in the reported logprobs, so the
processor leaves the logits alone and `plugin` swaps the sampled ids after sampling instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from mlnode.infer.forcing.batch import force_logits, swap_sampled
from mlnode.infer.forcing.plan import build_plan, forced_ids, target
from mlnode.infer.forcing.protocol import PROCESSED_MODES

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig


@dataclass
class _Forced:
    plan: list[int]
    # vLLM's live list of the request's output ids: its length is the position being sampled.
    output_ids: list[int]


class ForcedTokensV1(LogitsProcessor):  # type: ignore[misc]
    """Forces `vllm_xargs.mlnode_forced_ids` on the V1 model runner."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        from mlnode.infer.forcing.plugin import swap_installed

        self.device = device
        self.vocab_size: int = vllm_config.model_config.get_vocab_size()
        self.swap_mode = vllm_config.model_config.logprobs_mode in PROCESSED_MODES
        if self.swap_mode and not swap_installed("v1"):
            raise RuntimeError(
                "processed logprobs need mlnode's sampler swap, which is not installed"
            )
        self.rows: dict[int, _Forced] = {}

    def is_argmax_invariant(self) -> bool:
        """Forcing decides greedy sampling too."""
        return False

    def _new(
        self, params: SamplingParams, _prompt: list[int] | None, output_ids: list[int]
    ) -> _Forced | None:
        ids = forced_ids(params.extra_args)
        if ids is None:
            return None
        return _Forced(build_plan(ids, self.vocab_size, params.eos_token_id), output_ids)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Track which rows force what."""
        process_dict_updates(self.rows, batch_update, self._new)

    def targets(self) -> tuple[list[int], list[int]]:
        """Rows with a forced id this step, and those ids."""
        rows: list[int] = []
        ids: list[int] = []
        for row, forced in self.rows.items():
            token = target(forced.plan, len(forced.output_ids))
            if token is not None:
                rows.append(row)
                ids.append(token)
        return rows, ids

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw modes: leave only the forced id samplable (at logit 0, finite whatever masked it)."""
        if self.swap_mode or not self.rows:
            return logits
        rows, ids = self.targets()
        force_logits(logits, rows, ids)
        return logits

    def swap(self, sampled: torch.Tensor) -> None:
        """Processed modes: overwrite the sampled ids of forced rows (after sampling)."""
        if not self.rows:
            return
        rows, ids = self.targets()
        swap_sampled(sampled, rows, ids)


def find(logitsprocs: Any) -> ForcedTokensV1 | None:
    """The V1 forcing processor among a batch's `LogitsProcessors`, if loaded."""
    for proc in logitsprocs.all:
        if isinstance(proc, ForcedTokensV1):
            return proc
    return None
