"""DistanceEngine on CPU: streaming with inputs made ahead, stop, errors, OOM halving."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from mlnode.pow.v1.compute.engine import DistanceEngine, Prepared
from mlnode.pow.v1.compute.model import PowModel
from mlnode.pow.v1.compute.nonces import NonceShare
from mlnode.pow.v1.compute.params import ModelParams

TINY = ModelParams(32, 1, 2, 1, 64, None, 32, 1e-5, 10000.0, False, 4)


@pytest.fixture(scope="module")
def engine() -> DistanceEngine:
    return DistanceEngine(PowModel("engine-block", TINY, [torch.device("cpu")]), batch_size=8)


def test_stream_yields_the_share_in_order_and_matches_direct(engine: DistanceEngine) -> None:
    share = NonceShare(1, 2)
    stop = threading.Event()
    got = []
    for nonces, dist in engine.stream("key", share.batches(8), stop.is_set):
        got.append((nonces, dist))
        if len(got) == 3:
            stop.set()
    nonces = np.concatenate([n for n, _ in got]).tolist()
    assert nonces == [share.nonce(i) for i in range(24)]
    direct = engine.distances("key", nonces)
    assert np.array_equal(np.concatenate([d for _, d in got]), direct)
    assert engine.timings.input_s > 0 and engine.timings.forward_s > 0


def test_producer_errors_reach_the_consumer(engine: DistanceEngine) -> None:
    def broken() -> Iterator[list[int]]:
        yield [0, 1]
        raise RuntimeError("no more nonces")

    with pytest.raises(RuntimeError, match="no more nonces"):
        for _ in engine.stream("key", broken(), lambda: False):
            pass


def test_out_of_memory_halves_the_batch(
    engine: DistanceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = engine.distances("key", list(range(8)))
    real_run = DistanceEngine._run

    def small_only(self: DistanceEngine, prepared: Prepared) -> np.ndarray:
        if len(prepared.batch.nonces) > 2:
            raise torch.cuda.OutOfMemoryError("fake: too big")
        return real_run(self, prepared)

    monkeypatch.setattr(DistanceEngine, "_run", small_only)
    assert np.array_equal(engine.distances("key", list(range(8))), expected)
    assert engine.batch_size == 2


def test_parallel_input_workers_make_the_same_batch(engine: DistanceEngine) -> None:
    parallel = DistanceEngine(engine.model, batch_size=8, input_workers=3)
    try:
        nonces = list(range(100, 108))
        ours, theirs = parallel.prepare("key", nonces), engine.prepare("key", nonces)
        assert np.array_equal(ours.batch.inputs, theirs.batch.inputs)
        assert np.array_equal(ours.batch.permutations, theirs.batch.permutations)
        assert ours.batch.nonces.tolist() == nonces
    finally:
        parallel.close()
