"""The worker loop keeps going when a received batch cannot be computed."""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from mlnode.common.callbacks import CallbackPolicy, DestinationSender
from mlnode.pow.v1.schemas import PowInitRequest, PowParams, PowPhase, ProofBatch
from mlnode.pow.v1.settings import PowSettings
from mlnode.pow.v1.stats import PowStats
from mlnode.pow.v1.worker import JobContext, validate_next

PARAMS = PowParams(
    dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=64, ffn_dim_multiplier=None,
    multiple_of=32, norm_eps=1e-5, rope_theta=1e4, use_scaled_rope=False, seq_len=4,
)  # fmt: skip


class FlakyEngine:
    """Fails on the first batch it gets, then answers distances of 1.0 (a fake engine)."""

    def __init__(self) -> None:
        self.calls = 0

    def distances(self, public_key: str, nonces: list[int]) -> np.ndarray:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("device lost")
        return np.ones(len(nonces))


def job(validations: queue.Queue[ProofBatch], sender: DestinationSender) -> JobContext:
    init = PowInitRequest(
        block_hash="b", block_height=1, public_key="me", batch_size=4, r_target=1.2,
        fraud_threshold=1e-7, params=PARAMS, node_id=0, node_count=1, url="http://127.0.0.1:9",
    )  # fmt: skip
    return JobContext(
        init, lambda: PowPhase.VALIDATING, validations, sender, PowStats(), threading.Event(),
        shares=[], resume={},
    )  # fmt: skip


def test_failed_batch_is_reported_and_the_next_one_judged() -> None:
    validations: queue.Queue[ProofBatch] = queue.Queue()
    sender = DestinationSender(CallbackPolicy.of(PowSettings(_env_file=None)))
    ctx = job(validations, sender)
    batch = ProofBatch(
        public_key="p", block_hash="b", block_height=1, nonces=[1, 2], dist=[1.0, 1.1], node_id=0
    )
    validations.put(batch)
    validations.put(batch)
    engine: Any = FlakyEngine()
    assert validate_next(ctx, engine)
    assert "device lost" in (ctx.stats.last_error or "")
    assert validate_next(ctx, engine)
    assert ctx.stats.batches_validated == 1
    assert sender.stats().pending == 1
    assert not validate_next(ctx, engine)
