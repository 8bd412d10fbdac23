"""`PocWorkerExtension`: the PoC methods vLLM mixes into its worker (`--worker-extension-cls`).

The API server reaches them with `collective_rpc`, which the engine core runs between its own
steps, so a PoC chunk never overlaps a chat step and sees the weights being served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mlnode.pow.engine.compute import decode_trajectories, vector_artifacts
from mlnode.pow.engine.forward import ModelHandle, UnsupportedModel, inspect_model
from mlnode.pow.engine.protocol import ChunkSpec, ModelInfo
from mlnode.pow.engine.settings import PocEngineSettings
from mlnode.pow.poc.decode import Codebook

WORKER_EXTENSION = "mlnode.pow.engine.worker.PocWorkerExtension"


class _WorkerState:
    """The inspected model and the loaded codebook, built on first use."""

    def __init__(self) -> None:
        self.handle: ModelHandle | None = None
        self.unsupported: str | None = None
        self.codebook: Codebook | None = None


class PocWorkerExtension:
    """PoC methods of the worker; the rest of the worker is vLLM's."""

    # Provided by vLLM's worker, which this class is mixed into.
    model_runner: Any
    vllm_config: Any

    def _mlnode_poc_state(self) -> _WorkerState:
        state: _WorkerState | None = getattr(self, "_mlnode_poc", None)
        if state is None:
            state = _WorkerState()
            self._mlnode_poc = state
        return state

    def _mlnode_poc_handle(self) -> ModelHandle:
        state = self._mlnode_poc_state()
        if state.handle is None and state.unsupported is None:
            from vllm.model_executor.layers.attention.attention import Attention
            from vllm.model_executor.layers.attention.mla_attention import MLAAttention

            model = self.model_runner.get_model()
            while hasattr(model, "unwrap"):
                model = model.unwrap()
            config = self.vllm_config.model_config
            architecture = ",".join(getattr(config.hf_config, "architectures", None) or ["?"])
            try:
                state.handle = inspect_model(
                    model,
                    Attention,
                    architecture=architecture,
                    hf_config=config.hf_config,
                    hidden=int(config.get_hidden_size()),
                    dtype=config.dtype,
                    latent_cls=MLAAttention,
                )
            except UnsupportedModel as exc:
                state.unsupported = str(exc)
        if state.handle is None:
            raise UnsupportedModel(state.unsupported or "PoC forward unavailable")
        return state.handle

    def _mlnode_poc_context(self) -> Callable[[int], Any]:
        from vllm.forward_context import set_forward_context

        config = self.vllm_config
        return lambda rows: set_forward_context(None, config, num_tokens=rows)

    def _mlnode_poc_codebook(self, sha256: str | None) -> Codebook:
        state = self._mlnode_poc_state()
        if state.codebook is None:
            settings = PocEngineSettings()
            if settings.codebook_path is None or settings.codebook_sha256 is None:
                raise ValueError("no decode codebook configured (MLNODE_POC_CODEBOOK_PATH)")
            state.codebook = Codebook.load(settings.codebook_path, settings.codebook_sha256)
        if sha256 is not None and sha256 != state.codebook.sha256:
            raise ValueError("the worker's codebook differs from the server's")
        return state.codebook

    def mlnode_poc_describe(self) -> dict[str, Any]:
        """The served model as the PoC forward sees it; `unsupported` says why it cannot run."""
        config = self.vllm_config.model_config
        unsupported, decode_refusal = None, None
        try:
            handle = self._mlnode_poc_handle()
            n_layers, decode_refusal = len(handle.layers), handle.decode_refusal
        except UnsupportedModel as exc:
            unsupported, n_layers = str(exc), 0
        return ModelInfo(
            architecture=",".join(getattr(config.hf_config, "architectures", None) or ["?"]),
            hidden=int(config.get_hidden_size()),
            n_layers=n_layers,
            dtype=str(config.dtype).removeprefix("torch."),
            unsupported=unsupported,
            decode_unsupported=decode_refusal,
        ).to_wire()

    def mlnode_poc_vectors(self, spec: dict[str, Any]) -> list[list[Any]]:
        """Vector artifacts `[[nonce, vector_b64], ...]` of one chunk."""
        chunk = ChunkSpec.from_wire(spec)
        return vector_artifacts(self._mlnode_poc_handle(), chunk, self._mlnode_poc_context())

    def mlnode_poc_decode(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Decode trajectories (and teacher-forced scores) of one chunk."""
        chunk = ChunkSpec.from_wire(spec)
        codebook = self._mlnode_poc_codebook(chunk.codebook_sha256)
        handle = self._mlnode_poc_handle()
        with torch.inference_mode():
            result = decode_trajectories(handle, chunk, codebook, self._mlnode_poc_context())
        return result.to_wire()
