"""DestinationSender against a real HTTP receiver: order, retries while down, bounds, threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mlnode.common.callbacks import CallbackPolicy, DestinationSender, callback_url, retryable
from mlnode.common.testing.callback_receiver import CallbackReceiver


def policy(**changes: Any) -> CallbackPolicy:
    values: dict[str, Any] = {
        "callback_attempts": 1000,
        "callback_backoff_s": 0.05,
        "callback_backoff_max_s": 0.2,
        "callback_timeout_s": 2.0,
        "callback_deadline_s": 60.0,
        "callback_concurrency": 8,
        "callback_per_destination": 1,
        "callback_queue": 10,
    }
    return CallbackPolicy(**{**values, **changes})


@pytest.fixture
async def sender() -> AsyncIterator[DestinationSender]:
    made = DestinationSender(policy())
    made.start()
    yield made
    await made.close()


async def wait_for(receiver: CallbackReceiver, path: str, count: int) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = await asyncio.to_thread(
        receiver.wait_for, path, lambda b: len(b) >= count, 10
    )
    return bodies


def test_url_join_and_the_retry_rule() -> None:
    assert callback_url("http://h:1/base/", "/generated") == "http://h:1/base/generated"
    assert callback_url("http://h:1", "validated") == "http://h:1/validated"
    assert [retryable(s) for s in (500, 503, 408, 425, 429, 400, 404, 409)] == [True] * 5 + [
        False
    ] * 3


async def test_one_in_flight_per_destination_delivers_in_order(sender: DestinationSender) -> None:
    with CallbackReceiver() as receiver:
        for i in range(4):
            sender.submit(f"{receiver.url}/generated", {"i": i})
        bodies = await wait_for(receiver, "/generated", 4)
        assert await sender.drain(timeout_s=10)
    assert [b["i"] for b in bodies] == [0, 1, 2, 3]
    stats = sender.stats()
    assert (stats.sent, stats.pending, stats.dropped) == (4, 0, 0)


async def test_retries_while_the_receiver_is_down(sender: DestinationSender) -> None:
    receiver = CallbackReceiver()
    for i in range(3):
        sender.submit(f"{receiver.url}/validated", {"i": i})
    await asyncio.sleep(0.5)
    stats = sender.stats()
    assert stats.pending == 3 and stats.retried >= 2
    assert stats.last_error is not None and receiver.url in stats.last_error
    with receiver:
        bodies = await wait_for(receiver, "/validated", 3)
    assert [b["i"] for b in bodies] == [0, 1, 2]
    assert sender.stats().dropped == 0


async def test_server_errors_are_retried_a_refusal_is_not(sender: DestinationSender) -> None:
    with CallbackReceiver() as receiver:
        receiver.status_code = 503
        sender.submit(f"{receiver.url}/generated", {"i": 0})
        await asyncio.sleep(0.3)
        assert sender.stats().pending == 1
        receiver.status_code = 200
        await wait_for(receiver, "/generated", 1)
        receiver.status_code = 400
        sender.submit(f"{receiver.url}/generated", {"i": 1})
        assert await sender.drain(timeout_s=10)
    stats = sender.stats()
    assert (stats.sent, stats.dropped_refused, stats.dropped) == (1, 1, 1)


async def test_a_full_queue_drops_the_oldest_and_close_counts_the_rest() -> None:
    sender = DestinationSender(policy(callback_queue=5))
    for i in range(7):
        sender.submit(f"{CallbackReceiver().url}/generated", {"i": i})
    stats = sender.stats()
    assert (stats.pending, stats.dropped_overflow) == (5, 2)
    await sender.close()
    assert (sender.stats().pending, sender.stats().dropped) == (0, 7)


async def test_unusable_urls_are_dropped_and_delivery_goes_on(sender: DestinationSender) -> None:
    with CallbackReceiver() as receiver:
        sender.submit("http://[::1/generated", {"i": 0})  # httpx.InvalidURL
        sender.submit("http://xn--a/generated", {"i": 1})  # an IDNA error
        sender.submit(f"{receiver.url}/generated", {"i": 2})
        bodies = await wait_for(receiver, "/generated", 1)
        assert await sender.drain(timeout_s=10)
    assert bodies == [{"i": 2}]
    stats = sender.stats()
    assert (stats.dropped_invalid, stats.sent) == (2, 1)


async def test_threads_submit_through_the_senders_loop(sender: DestinationSender) -> None:
    with CallbackReceiver() as receiver:

        def worker(base: int) -> None:
            for i in range(3):
                sender.submit_from_thread(f"{receiver.url}/generated", {"i": base + i})

        threads = [threading.Thread(target=worker, args=(10 * t,)) for t in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        bodies = await wait_for(receiver, "/generated", 6)
        assert await sender.drain(timeout_s=10)
    assert sorted(b["i"] for b in bodies) == [0, 1, 2, 10, 11, 12]
    assert sender.stats().sent == 6
