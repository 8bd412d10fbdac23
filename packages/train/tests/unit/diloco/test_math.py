import pytest
import torch

from mlnode.train.diloco.math import (
    Compression,
    compress,
    decompress,
    nesterov_outer_step,
    pseudo_gradient,
    weighted_mean,
    weights_hash,
    wire_bytes,
)


def test_pseudo_gradient_is_synced_minus_current() -> None:
    synced = {"w": torch.tensor([1.0, 2.0, 3.0])}
    current = {"w": torch.tensor([0.5, 2.5, 3.0])}

    grad = pseudo_gradient(synced, current)

    assert torch.equal(grad["w"], torch.tensor([0.5, -0.5, 0.0]))


def test_weighted_mean_by_hand() -> None:
    tensors = [torch.tensor([1.0, 4.0]), torch.tensor([3.0, 0.0])]

    mean = weighted_mean(tensors, [1.0, 3.0])

    assert torch.allclose(mean, torch.tensor([2.5, 1.0]))


@pytest.mark.parametrize("weights", [[], [0.0, 0.0]])
def test_weighted_mean_refuses_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        weighted_mean([torch.ones(2), torch.ones(2)][: len(weights)] or [], weights)


def test_nesterov_outer_step_by_hand() -> None:
    param, grad, buf = torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.2])

    new_param, new_buf = nesterov_outer_step(param, grad, buf, lr=0.7, mu=0.9, nesterov=True)

    # buf = 0.9 * 0.2 + 0.5 = 0.68; step = 0.5 + 0.9 * 0.68 = 1.112; w = 1 - 0.7 * 1.112
    assert torch.allclose(new_buf, torch.tensor([0.68]))
    assert torch.allclose(new_param, torch.tensor([1.0 - 0.7 * 1.112]))


def test_outer_step_without_nesterov_uses_the_buffer() -> None:
    new_param, _ = nesterov_outer_step(
        torch.tensor([1.0]),
        torch.tensor([0.5]),
        torch.tensor([0.2]),
        lr=1.0,
        mu=0.9,
        nesterov=False,
    )

    assert torch.allclose(new_param, torch.tensor([1.0 - 0.68]))


def test_outer_step_matches_torch_sgd() -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5))
    reference = torch.optim.SGD([weight], lr=0.7, momentum=0.9, nesterov=True)
    mine, buf = weight.detach().clone(), torch.zeros(5)
    for _ in range(3):
        grad = torch.randn(5)
        weight.grad = grad.clone()
        reference.step()
        mine, buf = nesterov_outer_step(mine, grad, buf, lr=0.7, mu=0.9, nesterov=True)

    assert torch.allclose(mine, weight.detach(), atol=1e-6)


def test_fp16_roundtrip_halves_the_bytes() -> None:
    tensor = torch.linspace(-1, 1, 100)

    parts, residual = compress(tensor, Compression.FP16)

    assert residual is None
    assert wire_bytes(parts) == 200
    assert torch.allclose(decompress(parts, Compression.FP16), tensor, atol=1e-3)


def test_int8_by_hand() -> None:
    tensor = torch.tensor([127.0, -63.5, 0.2])

    parts, residual = compress(tensor, Compression.INT8)

    assert parts["q"].dtype == torch.int8
    assert parts["q"].tolist() == [127, -64, 0]  # scale 1: round half to even gives -64
    assert float(parts["scale"]) == 1.0
    assert residual is not None
    assert torch.allclose(residual, torch.tensor([0.0, 0.5, 0.2]))


def test_int8_error_feedback_sends_what_was_lost_later() -> None:
    torch.manual_seed(1)
    tensors = [torch.randn(1000) * 0.01 for _ in range(20)]
    residual = None
    sent = torch.zeros(1000)
    for tensor in tensors:
        parts, residual = compress(tensor, Compression.INT8, residual)
        sent += decompress(parts, Compression.INT8)

    total = torch.stack(tensors).sum(0)
    assert residual is not None
    # With feedback, what was sent plus what is still owed equals the true sum exactly.
    assert torch.allclose(sent + residual, total, atol=1e-5)
    assert (sent - total).abs().max() < 1e-3


def test_int8_of_zeros_is_zeros() -> None:
    parts, residual = compress(torch.zeros(4), Compression.INT8)

    assert torch.equal(decompress(parts, Compression.INT8), torch.zeros(4))
    assert residual is not None and torch.equal(residual, torch.zeros(4))


def test_weights_hash_sees_one_bit() -> None:
    state = {"a": torch.ones(3), "b": torch.zeros(2, 2)}
    flipped = {"a": torch.ones(3), "b": torch.zeros(2, 2)}
    flipped["b"].view(torch.int32)[0, 0] = 1

    assert weights_hash(state) == weights_hash({k: v.clone() for k, v in state.items()})
    assert weights_hash(state) != weights_hash(flipped)
    assert weights_hash({"x": torch.tensor(1.0)})  # 0-d works
