"""The PoC forward through the served vLLM model: the engine's own modules and weights, in place.

`inspect_model` finds the decoder layers and attention layers of the loaded model and refuses what
the scheme does not cover (MoE, pipeline stages, sliding windows, soft caps, ALiBi, sinks).
`run_forward` calls the model's uncompiled `forward` with `inputs_embeds` while two temporary
changes are active, and only then: a forward hook on every decoder layer reflecting its
`(hidden, residual)` output (SPEC §2.4), and each attention layer answering from the chunk's own
keys and values (`attention.py`) instead of the scheduler's paged cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlnode.pow.engine.attention import HeadShape, PocKVCache, causal_attention
from mlnode.pow.poc.inputs import reflect

_MOE_CONFIG_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


class UnsupportedModel(ValueError):
    """The served model is outside what the PoC forward covers; the message names why."""


@dataclass(frozen=True)
class AttentionSite:
    """One attention layer of the model and its head layout."""

    module: nn.Module
    name: str
    shape: HeadShape


@dataclass(frozen=True)
class ModelHandle:
    """What the PoC forward needs from a loaded vLLM model."""

    architecture: str
    body: nn.Module
    layers: tuple[nn.Module, ...]
    attention: tuple[AttentionSite, ...]
    hidden: int
    dtype: torch.dtype
    device: torch.device


def _decoder_body(model: nn.Module, architecture: str) -> tuple[nn.Module, nn.ModuleList]:
    """The module owning the decoder layers (`model.model.layers`, SPEC §2.4)."""
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if body is None or not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnsupportedModel(
            f"{architecture}: no decoder layers at model.model.layers; the PoC forward covers "
            "Llama-style decoders (Llama, Qwen2, Qwen3)"
        )
    start, end = getattr(body, "start_layer", 0), getattr(body, "end_layer", len(layers))
    if (start, end) != (0, len(layers)):
        raise UnsupportedModel(
            f"{architecture}: this rank holds layers {start}..{end} of {len(layers)}; "
            "pipeline parallelism is not supported by the PoC forward"
        )
    return body, layers


def _refuse_moe(model: nn.Module, hf_config: Any, architecture: str) -> None:
    counts = [getattr(hf_config, key, None) for key in _MOE_CONFIG_KEYS]
    routed = any(isinstance(c, int) and c > 1 for c in counts)
    if routed or any(hasattr(m, "experts") for m in model.modules()):
        raise UnsupportedModel(
            f"{architecture} is a mixture-of-experts model; the PoC forward supports dense "
            "decoders only (the seeded routing of SPEC §3 is not implemented)"
        )


def _head_shape(module: nn.Module, architecture: str, name: str) -> HeadShape:
    impl = getattr(module, "impl", None)
    refused = {
        "a sliding window": getattr(module, "sliding_window", None),
        "logit soft-capping": getattr(impl, "logits_soft_cap", None),
        "ALiBi slopes": getattr(impl, "alibi_slopes", None),
        "attention sinks": getattr(module, "has_sink", False) or None,
        "KV sharing": getattr(module, "kv_sharing_target_layer_name", None),
    }
    for what, value in refused.items():
        if value not in (None, 0, 0.0, -1, False):
            raise UnsupportedModel(f"{architecture}: layer {name} uses {what}, not supported")
    if str(getattr(module, "attn_type", "decoder")).lower().split(".")[-1] != "decoder":
        raise UnsupportedModel(f"{architecture}: layer {name} is not causal decoder attention")
    layer: Any = module  # vLLM's Attention: its head sizes are plain attributes
    scale = getattr(impl, "scale", None)
    if scale is None:
        raise UnsupportedModel(f"{architecture}: layer {name} has no attention scale")
    return HeadShape(
        num_heads=int(layer.num_heads),
        num_kv_heads=int(layer.num_kv_heads),
        head_size=int(layer.head_size),
        head_size_v=int(getattr(layer, "head_size_v", layer.head_size)),
        scale=float(scale),
    )


def inspect_model(
    model: nn.Module,
    attention_cls: type[nn.Module],
    *,
    architecture: str,
    hf_config: Any,
    hidden: int,
    dtype: torch.dtype,
) -> ModelHandle:
    """Find the layers the PoC forward hooks; `UnsupportedModel` names what is refused."""
    _refuse_moe(model, hf_config, architecture)
    body, layers = _decoder_body(model, architecture)
    sites = tuple(
        AttentionSite(module, name, _head_shape(module, architecture, name))
        for name, module in body.named_modules()
        if isinstance(module, attention_cls)
    )
    if len(sites) != len(layers):
        raise UnsupportedModel(
            f"{architecture}: {len(sites)} attention layers for {len(layers)} decoder layers; "
            "only one standard attention per layer is supported (no MLA, no linear attention)"
        )
    device = next(model.parameters()).device
    return ModelHandle(architecture, body, tuple(layers), sites, hidden, dtype, device)


def _reflect_output(v: torch.Tensor) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if not (isinstance(output, tuple) and len(output) == 2):
            raise UnsupportedModel("a decoder layer did not return (hidden, residual)")
        hidden, residual = output
        return reflect(hidden, v), reflect(residual, v)

    return hook


def _attend(site: AttentionSite, batch: int, cache: PocKVCache | None) -> Callable[..., Any]:
    def forward(
        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *_: Any, **__: Any
    ) -> torch.Tensor:
        return causal_attention(
            query, key, value, batch=batch, shape=site.shape, layer=site.name, cache=cache
        )

    return forward


@contextmanager
def poc_hooks(
    handle: ModelHandle, reflections: torch.Tensor, batch: int, cache: PocKVCache | None
) -> Iterator[None]:
    """Reflections after every layer and chunk-local attention, for the `with` block only."""
    vectors = reflections.to(device=handle.device, dtype=handle.dtype)
    with ExitStack() as stack:
        for layer, v in zip(handle.layers, vectors, strict=True):
            stack.callback(layer.register_forward_hook(_reflect_output(v)).remove)
        for site in handle.attention:
            # An instance attribute shadows the class's forward; deleting it restores the engine's.
            site.module.forward = _attend(site, batch, cache)
            stack.callback(delattr, site.module, "forward")
        yield


def run_forward(
    handle: ModelHandle,
    embeds: torch.Tensor,
    positions: torch.Tensor,
    reflections: torch.Tensor,
    *,
    batch: int,
    forward_context: Callable[[int], Any],
    cache: PocKVCache | None = None,
) -> torch.Tensor:
    """Post-norm hidden states `[B*S, H]` of `batch` sequences fed as `inputs_embeds [B*S, H]`."""
    with (
        torch.inference_mode(),
        forward_context(embeds.shape[0]),
        poc_hooks(handle, reflections, batch, cache),
    ):
        out = handle.body.forward(
            input_ids=None, positions=positions, intermediate_tensors=None, inputs_embeds=embeds
        )
    hidden = out[0] if isinstance(out, tuple) else out
    if not isinstance(hidden, torch.Tensor) or hidden.shape != embeds.shape:
        raise UnsupportedModel(f"{handle.architecture}: unexpected model output")
    return hidden
