"""The decode scheme's seeded routing inside the engine's own MoE layers (SPEC §3).

vLLM 0.32 routes a MoE layer in its runner's `router.select_experts(hidden_states, router_logits)`
(the gate's logits in, `(topk_weights, topk_ids)` out) before the fused experts run. For a decode
PoC forward, and only then, each router is asked to select from the PoC rows' ladder
(`poc.decode.routing_ladder`) instead of the gate's logits, and the weights it returns are replaced
by the softmax of the ladder over the experts it selected. The experts themselves, shared experts
and every weight are the engine's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlnode.pow.poc.decode import ladder_gate_weights

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class RouterSite:
    """The router of one MoE layer: its decoder-layer index and expert counts."""

    layer: int
    router: Any
    n_experts: int
    top_k: int


def find_routers(body: nn.Module) -> tuple[tuple[RouterSite, ...], str | None]:
    """MoE routers of the decoder layers, and why seeded routing is impossible (None: it is not)."""
    sites: list[RouterSite] = []
    for name, module in body.named_modules():
        router = getattr(module, "router", None)
        if router is None or not callable(getattr(router, "select_experts", None)):
            continue
        found = _LAYER_INDEX.search(name)
        if found is None:
            return (), f"MoE layer {name} is outside the decoder layers"
        if getattr(module, "is_monolithic", False):
            return (), f"MoE layer {name} routes inside a monolithic kernel (no router to steer)"
        sites.append(
            RouterSite(
                int(found.group(1)),
                router,
                int(router.global_num_experts),
                int(router.top_k),
            )
        )
    if len({id(s.router) for s in sites}) != len(sites):
        return (), "two MoE layers share one router"
    return tuple(sites), None


def _select(original: Any, ladder: torch.Tensor) -> Any:
    def select_experts(
        hidden_states: torch.Tensor, router_logits: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if ladder.shape[0] != hidden_states.shape[0]:
            raise RuntimeError(f"{ladder.shape[0]} ladder rows for {hidden_states.shape[0]} tokens")
        logits = ladder.to(device=router_logits.device, dtype=router_logits.dtype)
        weights, ids = original(hidden_states, logits, *args, **kwargs)
        gate = ladder_gate_weights(ladder.to(ids.device), ids)
        return gate.to(weights.dtype), ids

    return select_experts


@contextmanager
def seeded_routing(
    sites: tuple[RouterSite, ...], ladders: Mapping[int, torch.Tensor] | None
) -> Iterator[None]:
    """Route by `ladders[layer]` (`[rows, n_experts]`) inside the `with` block; None: untouched."""
    with ExitStack() as stack:
        if ladders is not None:
            for site in sites:
                original = site.router.select_experts
                site.router.select_experts = _select(original, ladders[site.layer])
                stack.callback(delattr, site.router, "select_experts")
        yield
