"""A round among honest workers and one peer sending malformed pseudo-gradients (common's fake
transport): the peer is left out with the reason, never failing a worker, and the robust rules
keep a well-formed but huge contribution from moving the result."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from mlnode.common.testing import TransportHub
from mlnode.train.diloco.aggregation import Aggregation
from mlnode.train.diloco.math import Compression, Tensors
from mlnode.train.diloco.round import WEIGHT_KEY, ErrorFeedback, RoundConfig, RoundResult, run_round

PEERS = {"w0": 0, "w1": 1, "w2": 2, "w3": 3, "bad": 4}
HONEST = ["w0", "w1", "w2", "w3"]
WEIGHT = 64.0


def grads(rank: int) -> Tensors:
    return {"a": torch.full((4,), 1.0 + rank / 10), "b": torch.ones(2, 3) * (1 + rank / 10)}


def wire_of(tensors: Tensors) -> dict[str, torch.Tensor]:
    return {f"{n}/v": t for n, t in tensors.items()} | {WEIGHT_KEY: torch.tensor(WEIGHT)}


def honest_round(
    hub: TransportHub, bad_wire: dict[str, torch.Tensor], aggregation: Aggregation
) -> dict[str, RoundResult]:
    results: dict[str, RoundResult] = {}

    def work(me: str) -> None:
        peers = {p: r for p, r in PEERS.items() if p != me}
        config = RoundConfig("t", PEERS[me], Compression.NONE, 5.0, 5.0, 1 << 20, aggregation, 1)
        results[me] = run_round(
            hub.node(me), peers, config, 0, grads(PEERS[me]), WEIGHT, ErrorFeedback()
        )

    for peer in PEERS:
        hub.node(peer)
    for peer in HONEST:
        hub.node("bad").send(peer, bad_wire, "t", "outer-0-/chunk-0")
    threads = [threading.Thread(target=work, args=(p,)) for p in HONEST]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


MALFORMED: list[tuple[str, Callable[[Tensors], dict[str, torch.Tensor]], str]] = [
    ("nan", lambda g: wire_of(g | {"a": torch.full((4,), float("nan"))}), "non-finite"),
    ("shape", lambda g: wire_of(g | {"a": torch.ones(5)}), "expected torch.float32(4,)"),
    ("dtype", lambda g: wire_of(g | {"a": torch.ones(4, dtype=torch.float16)}), "expected"),
    ("missing", lambda g: wire_of({"a": g["a"]}), "missing"),
    ("extra", lambda g: wire_of(g | {"c": torch.ones(1)}), "unexpected"),
    ("weight", lambda g: wire_of(g) | {WEIGHT_KEY: torch.tensor(1e9)}, "agreed"),
    ("no weight", lambda g: {f"{n}/v": t for n, t in g.items()}, "missing"),
]


@pytest.mark.parametrize(("case", "make", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_contribution_is_left_out_with_its_reason(
    case: str, make: Callable[[Tensors], dict[str, torch.Tensor]], reason: str
) -> None:
    results = honest_round(TransportHub(), make(grads(4)), Aggregation.MEAN)

    expected = torch.full((4,), 1.15)  # the mean of the four honest workers only
    for result in results.values():
        assert "invalid pseudo-gradient" in result.failures["bad"]
        assert reason in result.failures["bad"]
        assert sorted(result.results) == [0, 1, 2, 3]
        assert torch.allclose(result.average["a"], expected)
        assert torch.equal(result.average["b"], results["w0"].average["b"])


@pytest.mark.parametrize("aggregation", [a for a in Aggregation if a is not Aggregation.MEAN])
def test_robust_rules_hold_against_a_huge_wellformed_contribution(
    aggregation: Aggregation,
) -> None:
    huge = {n: t * 1e6 for n, t in grads(4).items()}

    results = honest_round(TransportHub(), wire_of(huge), aggregation)

    for result in results.values():
        assert sorted(result.results) == [0, 1, 2, 3, 4]  # well-formed: it took part
        assert float(result.average["a"].abs().max()) < 2.0
        assert torch.equal(result.average["a"], results["w0"].average["a"])
