"""Seeded routing of decode PoC rows through a router shaped like vLLM's (SPEC §3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlnode.pow.engine.routing import find_routers, seeded_routing
from mlnode.pow.poc.decode import routing_ladder


class SoftmaxRouter:
    """Stands for vLLM's router: softmax top-k of the logits it is given."""

    def __init__(self, n: int = 16, k: int = 4) -> None:
        self.global_num_experts, self.top_k = n, k
        self.seen: torch.Tensor | None = None

    def select_experts(
        self, hidden_states: torch.Tensor, router_logits: torch.Tensor, *_: Any, **__: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen = router_logits
        weights, ids = torch.topk(torch.softmax(router_logits, dim=-1), self.top_k, sorted=False)
        return weights * 2.5, ids.to(torch.int32)  # a routed scale the ladder's weights replace


def body(*routers: Any, monolithic: bool = False) -> nn.Module:
    root = nn.Module()
    root.layers = nn.ModuleList()
    for router in routers:
        layer = nn.Module()
        layer.mlp = nn.Module()
        layer.mlp.experts = nn.Module()
        layer.mlp.experts.router = router
        setattr(layer.mlp.experts, "is_monolithic", monolithic)  # noqa: B010 (a plain attribute)
        root.layers.append(layer)
    return root


def test_routers_are_found_per_decoder_layer() -> None:
    sites, refusal = find_routers(body(SoftmaxRouter(), SoftmaxRouter(8, 2)))
    assert refusal is None
    assert [(s.layer, s.n_experts, s.top_k) for s in sites] == [(0, 16, 4), (1, 8, 2)]


def test_a_monolithic_kernel_or_a_shared_router_cannot_be_steered() -> None:
    assert "monolithic" in str(find_routers(body(SoftmaxRouter(), monolithic=True))[1])
    shared = SoftmaxRouter()
    assert "share" in str(find_routers(body(shared, shared))[1])


def test_poc_rows_route_by_the_ladder_and_weigh_by_its_softmax() -> None:
    router = SoftmaxRouter()
    sites, _ = find_routers(body(router))
    ladder = routing_ladder("bh", [0, 1, 2], 0, [5, 5, 5], n_experts=16, top_k=4)
    hidden, logits = torch.randn(3, 8), torch.randn(3, 16)
    with seeded_routing(sites, {0: ladder}):
        weights, ids = router.select_experts(hidden, logits)
    assert router.seen is not None and torch.equal(router.seen, ladder)
    for row in range(3):
        run = [int(i) for i in torch.nonzero(ladder[row] > 0).flatten()]
        assert sorted(ids[row].tolist()) == run
    expected = torch.softmax(torch.tensor([4.0, 3.0, 2.0, 1.0]), dim=-1)
    torch.testing.assert_close(weights.sort(dim=-1, descending=True).values[0], expected)
    # Outside the block the router is the engine's again.
    _, own = router.select_experts(hidden, logits)
    assert router.seen is not None and torch.equal(router.seen, logits)
    assert torch.equal(own, torch.topk(logits.softmax(-1), 4, sorted=False).indices.to(torch.int32))
