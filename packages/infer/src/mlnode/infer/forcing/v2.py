"""Forcing on vLLM's Model Runner V2 (`vllm.v1.worker.gpu.sample.logits_processor` interface).

V2 hands processors a persistent request slot per request and a batch layout per step. The
output position a row samples is `seq_len - prompt_len` (the host-side upper bound is exact
without speculative decoding, which custom processors exclude). As on V1, raw modes mask the
logits (V2 copies them before any processor, v1/worker/gpu/sample/sampler.py, so the raw
logprobs stay the model's own) and processed modes swap the sampled ids through `plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from mlnode.infer.forcing.batch import force_logits, swap_sampled
from mlnode.infer.forcing.plan import build_plan, forced_ids, target
from mlnode.infer.forcing.protocol import PROCESSED_MODES

if TYPE_CHECKING:
    import numpy as np
    from vllm import SamplingParams
    from vllm.config import VllmConfig
    from vllm.v1.worker.gpu.sample.logits_processor.interface import (
        LogitsContext,
        LogitsProcRequestState,
    )


class ForcedTokensV2(LogitsProcessor):  # type: ignore[misc]
    """Forces `vllm_xargs.mlnode_forced_ids` on Model Runner V2."""

    def __init__(self, vllm_config: VllmConfig, req_states: LogitsProcRequestState):
        from mlnode.infer.forcing.plugin import swap_installed

        self.req_states = req_states
        self.vocab_size: int = req_states.vocab_size
        self.swap_mode = vllm_config.model_config.logprobs_mode in PROCESSED_MODES
        if self.swap_mode and not swap_installed("v2"):
            raise RuntimeError(
                "processed logprobs need mlnode's sampler swap, which is not installed"
            )
        self.plans: dict[int, list[int]] = {}

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        """(Re)initialise a slot; True when its logits must be masked."""
        ids = forced_ids(sampling_params.extra_args)
        if ids is None:
            self.plans.pop(req_idx, None)
            return False
        self.plans[req_idx] = build_plan(ids, self.vocab_size, sampling_params.eos_token_id)
        return not self.swap_mode

    def targets(
        self, idx_mapping_np: np.ndarray, seq_lens_np: np.ndarray
    ) -> tuple[list[int], list[int]]:
        """Rows (batch positions) with a forced id this step, and those ids."""
        rows: list[int] = []
        ids: list[int] = []
        if not self.plans:
            return rows, ids
        prompt_len = self.req_states.prompt_len.np
        for row, slot in enumerate(idx_mapping_np.tolist()):
            plan = self.plans.get(slot)
            if plan is None:
                continue
            token = target(plan, int(seq_lens_np[row]) - int(prompt_len[slot]))
            if token is not None:
                rows.append(row)
                ids.append(token)
        return rows, ids

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Raw modes: leave only the forced id samplable."""
        if self.swap_mode or not self.plans:
            return logits
        rows, ids = self.targets(ctx.idx_mapping_np, ctx.seq_lens_upper_bound_np)
        force_logits(logits, rows, ids)
        return logits

    def swap(
        self, sampled: torch.Tensor, idx_mapping_np: np.ndarray, seq_lens_np: np.ndarray
    ) -> None:
        """Processed modes: overwrite the sampled ids of forced rows (after sampling)."""
        rows, ids = self.targets(idx_mapping_np, seq_lens_np)
        swap_sampled(sampled, rows, ids)


def find(processors: Any) -> ForcedTokensV2 | None:
    """The V2 forcing processor among a sampler's processors, if loaded."""
    for proc in processors:
        if isinstance(proc, ForcedTokensV2):
            return proc
    return None
