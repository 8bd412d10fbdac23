"""What the PoC forward accepts of a served model, on small modules shaped like vLLM's.

The forward itself runs against real vLLM in the integration tier; here only the inspection.
"""

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from mlnode.pow.engine.forward import UnsupportedModel, inspect_model


class Attention(nn.Module):
    """Stands for vLLM's Attention layer: head sizes and an impl with the scale."""

    def __init__(self, **extra: Any) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_size = 4, 2, 16
        self.impl = SimpleNamespace(scale=0.25, logits_soft_cap=None, alibi_slopes=None)
        self.sliding_window = None
        for key, value in extra.items():
            setattr(self, key, value)


class Layer(nn.Module):
    def __init__(self, mlp: nn.Module | None = None, **attention: Any) -> None:
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.attn = Attention(**attention)
        self.mlp = mlp or nn.Linear(4, 4)


def model(*layers: Layer, **body: Any) -> nn.Module:
    top = nn.Module()
    top.model = nn.Module()
    top.model.layers = nn.ModuleList(layers)
    for key, value in body.items():
        setattr(top.model, key, value)
    return top


class MLAAttention(nn.Module):
    """Stands for vLLM's MLAAttention after loading: sizes, scale and the up-projections."""

    def __init__(self, packed: bool = False, **extra: Any) -> None:
        super().__init__()
        self.num_heads, self.qk_nope_head_dim, self.qk_rope_head_dim = 4, 16, 8
        self.v_head_dim, self.kv_lora_rank, self.scale = 16, 32, 0.2
        if not packed:
            self.W_UK_T = nn.Parameter(torch.zeros(4, 16, 32), requires_grad=False)
            self.W_UV = nn.Parameter(torch.zeros(4, 32, 16), requires_grad=False)
        for key, value in extra.items():
            setattr(self, key, value)


class Rotary(nn.Module):
    def forward_native(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> Any:
        return q, k


def mla_layer(mlp: nn.Module | None = None, **attention: Any) -> Layer:
    layer = Layer(mlp=mlp)
    layer.self_attn = nn.Module()
    layer.self_attn.mla_attn = nn.Module()
    layer.self_attn.mla_attn.rotary_emb = Rotary()
    layer.self_attn.mla_attn.mla_attn = MLAAttention(**attention)
    return layer


def inspect(m: nn.Module, **config: Any) -> Any:
    return inspect_model(
        m, Attention, architecture="TestForCausalLM", hf_config=SimpleNamespace(**config),
        hidden=64, dtype=torch.float32, latent_cls=MLAAttention,
    )  # fmt: skip


def test_a_dense_decoder_is_accepted_with_its_head_layout() -> None:
    handle = inspect(model(Layer(), Layer()))
    assert len(handle.layers) == 2 and len(handle.attention) == 2
    shape = handle.attention[0].shape
    assert (shape.num_heads, shape.num_kv_heads, shape.head_size, shape.scale) == (4, 2, 16, 0.25)
    assert handle.attention[0].name == "layers.0.self_attn.attn"


def experts_mlp() -> nn.Module:
    mlp = nn.Module()
    mlp.experts = nn.ModuleList([nn.Linear(4, 4)])
    return mlp


def test_mixture_of_experts_runs_through_its_own_layers() -> None:
    assert inspect(model(Layer(), Layer(mlp=experts_mlp()))).moe is True
    assert inspect(model(Layer()), n_routed_experts=16).moe is True
    assert inspect(model(Layer()), num_experts=1).moe is False


def test_mla_layers_are_found_with_their_head_layout_and_rotary() -> None:
    handle = inspect(model(Layer(), mla_layer(mlp=experts_mlp())))
    site = handle.attention[1]
    assert site.name == "layers.1.self_attn.mla_attn.mla_attn"
    shape = site.shape
    assert (shape.num_heads, shape.num_kv_heads, shape.head_size, shape.head_size_v) == (
        4,
        4,
        24,
        16,
    )
    assert (
        shape.scale == 0.2 and site.latent is not None and site.latent.w_uk_t.shape == (4, 16, 32)
    )
    assert site.rotary is not None and handle.attention[0].latent is None


@pytest.mark.parametrize(
    ("m", "config", "reason"),
    [
        (model(mla_layer(packed=True)), {}, "--attention-backend CPU_MLA"),
        (model(mla_layer(use_sparse=True)), {}, "sparse attention"),
        (model(Layer(sliding_window=4096)), {}, "sliding window"),
        (model(Layer(impl=SimpleNamespace(scale=1.0, logits_soft_cap=30.0))), {}, "soft-capping"),
        (model(Layer(), Layer(), start_layer=1, end_layer=2), {}, "pipeline"),
        (model(), {}, "no decoder layers"),
    ],
)
def test_unsupported_models_are_refused_naming_architecture_and_reason(
    m: nn.Module, config: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnsupportedModel, match="TestForCausalLM") as refused:
        inspect(m, **config)
    assert reason in str(refused.value)


def test_a_layer_without_softmax_attention_is_refused_naming_linear_attention() -> None:
    layer = Layer()
    layer.self_attn.attn = nn.Linear(4, 4)  # e.g. a linear-attention or state-space mixer
    with pytest.raises(
        UnsupportedModel, match="1 attention layers for 2 decoder layers"
    ) as refused:
        inspect(model(Layer(), layer))
    assert "linear attention" in str(refused.value)
