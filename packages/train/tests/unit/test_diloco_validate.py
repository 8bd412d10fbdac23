"""What a worker refuses from a peer, and the aggregation rules, on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from mlnode.train.diloco.aggregation import Aggregation, combine, effective
from mlnode.train.diloco.math import Compression, compress
from mlnode.train.diloco.validate import check_chunk, check_state, digest_of, layout_of

LAYOUT = layout_of({"a": torch.zeros(4), "b": torch.zeros(2, 3)})
WEIGHT = {"__weight__": torch.tensor(64.0)}


def wire(mode: Compression, a: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    grads = {"a": torch.ones(4) if a is None else a, "b": torch.ones(2, 3)}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in grads.items():
        parts, _ = compress(tensor, mode)
        out |= {f"{name}/{k}": v for k, v in parts.items()}
    return out


@pytest.mark.parametrize("mode", list(Compression))
def test_an_honest_chunk_passes(mode: Compression) -> None:
    assert check_chunk(wire(mode) | WEIGHT, ["a", "b"], LAYOUT, mode, WEIGHT) is None


def refused(got: dict[str, torch.Tensor], mode: Compression = Compression.NONE) -> str:
    reason = check_chunk(got, ["a", "b"], LAYOUT, mode, WEIGHT)
    assert reason is not None
    return reason


def test_refusals_name_the_problem() -> None:
    honest = wire(Compression.NONE) | WEIGHT
    assert "missing" in refused({k: v for k, v in honest.items() if k != "b/v"})
    assert "unexpected" in refused(honest | {"c/v": torch.ones(1)})
    assert "expected torch.float32(4,)" in refused(honest | {"a/v": torch.ones(5)})
    assert "expected torch.float32" in refused(honest | {"a/v": torch.ones(4).double()})
    assert "non-finite" in refused(honest | {"a/v": torch.tensor([1.0, float("nan"), 0, 0])})
    assert "agreed" in refused(honest | {"__weight__": torch.tensor(1e9)})
    int8 = wire(Compression.INT8) | WEIGHT
    assert "non-finite" in refused(int8 | {"a/scale": torch.tensor(float("inf"))}, Compression.INT8)
    assert "expected torch.int8" in refused(int8 | {"a/q": torch.ones(4)}, Compression.INT8)


def test_check_state() -> None:
    good = {"a": torch.zeros(4), "b": torch.zeros(2, 3)}
    assert check_state(good, good, LAYOUT) is None
    assert "missing" in str(check_state({"a": torch.zeros(4)}, good, LAYOUT))
    assert "expected" in str(check_state(good | {"b": torch.zeros(3, 2)}, good, LAYOUT))
    bad_momentum = good | {"a": torch.full((4,), float("inf"))}
    assert "momentum a has non-finite" in str(check_state(good, bad_momentum, LAYOUT))


def test_digest_of_accepts_only_32_bytes() -> None:
    assert digest_of(torch.full((32,), 171, dtype=torch.uint8)) == "ab" * 32
    assert digest_of(torch.zeros(33, dtype=torch.uint8)) is None
    assert digest_of(torch.zeros(32)) is None
    assert digest_of(None) is None


@pytest.mark.parametrize(
    ("method", "n", "f", "rule"),
    [
        (Aggregation.MEDIAN, 2, 1, Aggregation.MEAN),
        (Aggregation.TRIMMED_MEAN, 5, 1, Aggregation.TRIMMED_MEAN),
        (Aggregation.TRIMMED_MEAN, 4, 2, Aggregation.MEDIAN),
        (Aggregation.KRUM, 5, 1, Aggregation.KRUM),
        (Aggregation.KRUM, 4, 1, Aggregation.MEDIAN),
        (Aggregation.CENTERED_CLIP, 3, 0, Aggregation.CENTERED_CLIP),
    ],
)
def test_effective_rule(method: Aggregation, n: int, f: int, rule: Aggregation) -> None:
    assert effective(method, n, f) is rule


def test_every_robust_rule_resists_one_huge_contribution() -> None:
    honest = [torch.tensor([1.0, 2.0]), torch.tensor([1.2, 2.2]), torch.tensor([0.8, 1.8])]
    honest.append(torch.tensor([1.1, 1.9]))
    attack = torch.tensor([1e6, -1e6])
    for method in Aggregation:
        result = combine([*honest, attack], method, 1, 1.0)
        if method is Aggregation.MEAN:
            assert result.abs().max() > 1e5
        else:
            assert torch.allclose(result, torch.tensor([1.0, 2.0]), atol=0.6), method
