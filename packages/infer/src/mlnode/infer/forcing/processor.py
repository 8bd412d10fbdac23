"""`ForcedTokens`: the one `--logits-processors` class, whichever model runner the engine picks.

vLLM decides between its V1 and V2 model runners at start-up (config/vllm.py,
`use_v2_model_runner`: V2 on CUDA with Triton, V1 elsewhere) and each loads only processors of its
own interface (v1/sample/logits_processor/__init__.py, v1/worker/gpu/sample/logits_processor/
loader.py). The node cannot know the choice in advance, so this class passes both interface
checks and builds the matching implementation from the constructor arguments it receives.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcRequestState

from mlnode.infer.forcing.plan import forced_ids
from mlnode.infer.forcing.protocol import PROBE_XARG, probe_message


class ForcedTokens(V1LogitsProcessor, V2LogitsProcessor):  # type: ignore[misc]
    """Dispatches to `ForcedTokensV1` or `ForcedTokensV2`; validates per-request arguments."""

    def __new__(cls, vllm_config: Any, *args: Any) -> Any:  # noqa: D102
        if len(args) == 1 and isinstance(args[0], LogitsProcRequestState):
            from mlnode.infer.forcing.v2 import ForcedTokensV2

            return ForcedTokensV2(vllm_config, args[0])
        from mlnode.infer.forcing.v1 import ForcedTokensV1

        return ForcedTokensV1(vllm_config, *args)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse malformed forced ids (400); answer the readiness probe with the self-check."""
        extra = sampling_params.extra_args or {}
        if PROBE_XARG in extra:
            from mlnode.infer.forcing.plugin import readiness

            raise ValueError(probe_message(*readiness()))
        forced_ids(extra)
