import dataclasses
import threading
import time
from collections.abc import Callable, Mapping

import pytest
import torch

from mlnode.common.testing import TransportHub
from mlnode.train.diloco.aggregation import Aggregation
from mlnode.train.diloco.math import Compression, Tensors, compress, decompress
from mlnode.train.diloco.round import (
    Aggregate,
    ErrorFeedback,
    RoundConfig,
    RoundResult,
    plan_chunks,
    run_round,
)
from mlnode.train.diloco.sparse import SparseSpec

NAMES = ["w0", "w1", "w2"]


def grads_of(rank: int) -> Tensors:
    return {
        "a": torch.full((4,), float(rank + 1)),
        "b": torch.arange(6, dtype=torch.float32).reshape(2, 3) * (rank + 1),
    }


def run_workers(
    hub: TransportHub,
    ranks: list[int],
    compression: Compression = Compression.NONE,
    # Rounds whose peers all take part end as soon as they have: the deadline only has to
    # outlast a loaded machine (5 s did not, while eight test runs shared two cores).
    timeout_s: float = 30.0,
    chunk_bytes: int = 1 << 20,
    grads: Callable[[int], Tensors] = grads_of,
) -> dict[int, RoundResult]:
    results: dict[int, RoundResult] = {}

    def work(rank: int) -> None:
        peers = {n: r for r, n in enumerate(NAMES) if r != rank}
        config = RoundConfig("task", rank, compression, timeout_s, timeout_s, chunk_bytes)
        results[rank] = run_round(
            hub.node(NAMES[rank]), peers, config, 0, grads(rank), 1.0, ErrorFeedback()
        )

    threads = [threading.Thread(target=work, args=(r,)) for r in ranks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_three_workers_get_the_same_mean() -> None:
    results = run_workers(TransportHub(), [0, 1, 2])

    expected = torch.full((4,), 2.0)
    for result in results.values():
        assert torch.equal(result.average["a"], expected)
        assert torch.equal(result.average["b"], results[0].average["b"])
        assert result.failures == {}
        assert sorted(result.results) == [0, 1, 2]
        assert result.bytes_sent == 2 * (4 + 6 + 1) * 4  # two peers, fp32, plus the weight
        assert result.bytes_received == result.bytes_sent


def test_a_silent_peer_is_left_out_and_survivors_agree() -> None:
    started = time.monotonic()
    results = run_workers(TransportHub(), [0, 1], timeout_s=1.0)

    assert time.monotonic() - started < 10
    assert torch.equal(results[0].average["a"], torch.full((4,), 1.5))
    for rank in (0, 1):
        assert "w2" in results[rank].failures
        assert "deadline" in results[rank].failures["w2"]
        assert sorted(results[rank].results) == [0, 1]
        assert torch.equal(results[rank].average["b"], results[0].average["b"])


def test_a_dead_peer_fails_fast() -> None:
    hub = TransportHub()
    hub.kill("w2")
    started = time.monotonic()

    results = run_workers(hub, [0, 1], timeout_s=20.0)

    assert time.monotonic() - started < 5
    assert "send failed" in results[0].failures["w2"]
    assert torch.equal(results[0].average["a"], results[1].average["a"])


@pytest.mark.parametrize("mode", [Compression.FP16, Compression.INT8])
def test_compressed_rounds_are_bit_identical_across_workers(mode: Compression) -> None:
    torch.manual_seed(0)
    noise = {r: {"a": torch.randn(64), "b": torch.randn(8, 8)} for r in range(3)}

    results = run_workers(TransportHub(), [0, 1, 2], compression=mode, grads=noise.__getitem__)

    true_mean = torch.stack([noise[r]["b"] for r in range(3)]).mean(0)
    for result in results.values():
        assert torch.equal(result.average["b"], results[0].average["b"])
        assert torch.allclose(result.average["b"], true_mean, atol=0.05)
    raw = 2 * (64 + 64) * 4
    assert results[0].bytes_sent < raw / (1.9 if mode is Compression.FP16 else 3.5)


def test_sparse_rounds_are_bit_identical_and_average_the_decoded_contributions() -> None:
    torch.manual_seed(0)
    noise = {r: {"a": torch.randn(64), "b": torch.randn(64, 80)} for r in range(3)}

    results = run_workers(
        TransportHub(), [0, 1, 2], compression=Compression.SPARSELOCO, grads=noise.__getitem__
    )

    spec = SparseSpec()
    decoded = [
        decompress(
            compress(noise[r]["b"], Compression.SPARSELOCO, None, spec)[0],
            Compression.SPARSELOCO,
            (64, 80),
            spec,
        )
        for r in range(3)
    ]
    for result in results.values():
        assert sorted(result.results) == [0, 1, 2]
        assert torch.equal(result.average["b"], results[0].average["b"])
        assert torch.allclose(result.average["b"], torch.stack(decoded).mean(0), atol=1e-6)
    raw = 2 * (64 + 64 * 80) * 4
    assert results[0].bytes_sent < raw / 50


@pytest.mark.parametrize("whole", [False, True])
def test_sparse_contributions_reach_the_robust_rules_and_the_gate_decoded(whole: bool) -> None:
    torch.manual_seed(1)
    noise = {r: {"w": torch.randn(32, 40)} for r in range(3)}
    spec = SparseSpec(density=1 / 8, chunk=256)
    results: dict[int, RoundResult] = {}
    seen: dict[int, tuple[dict[int, Tensors], dict[int, str]]] = {}

    def first_only(rank: int) -> Aggregate:
        def aggregate(contributions: Mapping[int, Tensors], names: Mapping[int, str]) -> Tensors:
            seen[rank] = dict(contributions), dict(names)
            return contributions[0]

        return aggregate

    def work(rank: int) -> None:
        peers = {n: r for r, n in enumerate(NAMES) if r != rank}
        config = RoundConfig(
            "task", rank, Compression.SPARSELOCO, 30.0, 30.0, aggregation=Aggregation.MEDIAN
        )
        config = dataclasses.replace(config, sparse=spec)
        results[rank] = run_round(
            hub.node(NAMES[rank]),
            peers,
            config,
            0,
            noise[rank],
            1.0,
            ErrorFeedback(),
            aggregate=first_only(rank) if whole else None,
        )

    hub = TransportHub()
    threads = [threading.Thread(target=work, args=(r,)) for r in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    decoded = [
        decompress(
            compress(noise[r]["w"], Compression.SPARSELOCO, None, spec)[0],
            Compression.SPARSELOCO,
            (32, 40),
            spec,
        )
        for r in range(3)
    ]
    for result in results.values():
        if whole:  # what the loss gate scores: each worker's decoded contribution
            assert sorted(result.contributions) == [0, 1, 2]
            for rank in range(3):
                assert torch.equal(result.contributions[rank]["w"], decoded[rank])
            assert torch.equal(result.average["w"], decoded[0])
            rank = next(r for r, name in result.results.items() if name == "self")
            assert seen[rank][1] == result.results
            assert sorted(seen[rank][0]) == [0, 1, 2]
        else:
            assert torch.equal(result.average["w"], torch.stack(decoded).median(dim=0).values)


def test_small_chunks_give_the_same_average() -> None:
    whole = run_workers(TransportHub(), [0, 1, 2])
    chunked = run_workers(TransportHub(), [0, 1, 2], chunk_bytes=8)

    assert len(plan_chunks(grads_of(0), 8)) == 2
    for rank in range(3):
        for name in ("a", "b"):
            assert torch.equal(whole[rank].average[name], chunked[rank].average[name])


def test_plan_chunks_groups_whole_tensors() -> None:
    tensors = {"a": torch.zeros(10), "b": torch.zeros(10), "c": torch.zeros(100)}

    assert plan_chunks(tensors, 80) == [["a", "b"], ["c"]]
    assert plan_chunks(tensors, 1) == [["a"], ["b"], ["c"]]


def test_stop_ends_the_wait() -> None:
    stop = threading.Event()
    config = RoundConfig("task", 0, Compression.NONE, 60.0, 60.0)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()

    result = run_round(
        TransportHub().node("w0"), {"w1": 1}, config, 0, grads_of(0), 1.0, ErrorFeedback(), stop
    )

    assert time.monotonic() - started < 5
    assert "w1" in result.failures
