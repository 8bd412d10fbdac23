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


def inspect(m: nn.Module, **config: Any) -> Any:
    return inspect_model(
        m, Attention, architecture="TestForCausalLM", hf_config=SimpleNamespace(**config),
        hidden=64, dtype=torch.float32,
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


@pytest.mark.parametrize(
    ("m", "config", "reason"),
    [
        (model(Layer(mlp=experts_mlp())), {}, "mixture-of-experts"),
        (model(Layer()), {"num_experts": 8}, "mixture-of-experts"),
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


def test_a_layer_without_standard_attention_is_refused() -> None:
    layer = Layer()
    layer.self_attn.attn = nn.Linear(4, 4)
    with pytest.raises(UnsupportedModel, match="attention layers"):
        inspect(model(layer))
