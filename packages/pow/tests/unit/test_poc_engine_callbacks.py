"""Callback delivery to a real local receiver: success, bounded retries, drops counted."""

from collections.abc import Iterator
from typing import Any

import pytest

from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.pow.engine.callbacks import CallbackSender, retry_delay
from mlnode.pow.engine.settings import PocEngineSettings


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    started = CallbackReceiver().start()
    yield started
    started.stop()


def fast(**overrides: Any) -> PocEngineSettings:
    return PocEngineSettings(
        callback_backoff_s=0.01, callback_backoff_max_s=0.02, callback_timeout_s=5, **overrides
    )


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [retry_delay(a, 1.0, 30.0) for a in (1, 2, 3, 5, 6, 9)] == [1, 2, 4, 16, 30, 30]


async def test_delivered_bodies_arrive_and_are_counted(receiver: CallbackReceiver) -> None:
    sender = CallbackSender(fast())
    sender.start()
    for i in range(3):
        sender.submit(f"{receiver.url}/generated", {"i": i})
    assert await sender.drain(timeout_s=10)
    await sender.close()
    assert sorted(b["i"] for b in receiver.bodies("/generated")) == [0, 1, 2]
    stats = sender.stats()
    assert (stats.sent, stats.retried, stats.dropped_failed, stats.pending) == (3, 0, 0, 0)


async def test_a_refusing_receiver_is_retried_then_the_callback_dropped(
    receiver: CallbackReceiver,
) -> None:
    receiver.status_code = 503
    sender = CallbackSender(fast(callback_attempts=3))
    sender.start()
    sender.submit(f"{receiver.url}/validated", {"request_id": "r"})
    assert await sender.drain(timeout_s=10)
    await sender.close()
    stats = sender.stats()
    assert (stats.sent, stats.retried, stats.dropped_failed) == (0, 2, 1)


async def test_an_unreachable_receiver_is_dropped_after_its_attempts() -> None:
    sender = CallbackSender(fast(callback_attempts=2))
    sender.start()
    sender.submit("http://127.0.0.1:9/generated", {})
    assert await sender.drain(timeout_s=10)
    await sender.close()
    assert sender.stats().dropped_failed == 1


async def test_a_full_queue_drops_the_oldest_and_close_counts_the_rest() -> None:
    sender = CallbackSender(fast(callback_queue=2))
    for i in range(3):
        sender.submit("http://127.0.0.1:9/generated", {"i": i})
    stats = sender.stats()
    assert (stats.dropped_overflow, stats.pending) == (1, 2)
    await sender.close()
    assert sender.stats().dropped_overflow == 3
