"""Callback delivery to a real local receiver: success, bounded retries, drops counted."""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlnode.common.callbacks import CallbackPolicy, retry_delay
from mlnode.common.testing.callback_receiver import CallbackReceiver, Tarpit
from mlnode.pow.engine.callbacks import CallbackSender, InvalidCallbackUrl, destination
from mlnode.pow.engine.settings import PocEngineSettings


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    started = CallbackReceiver().start()
    yield started
    started.stop()


def fast(**overrides: Any) -> PocEngineSettings:
    values: dict[str, Any] = {
        "callback_backoff_s": 0.01,
        "callback_backoff_max_s": 0.02,
        "callback_timeout_s": 5,
    }
    return PocEngineSettings(**{**values, **overrides})


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


def test_destination_names_scheme_host_and_port_only() -> None:
    assert (
        destination("http://user:pw@Node.example:8080/cb/x?token=s") == "http://node.example:8080"
    )
    assert destination("https://[::1]/generated") == "https://[::1]:443"
    for bad in ("http://[::1/generated", "http://host:port/x", "http:///generated", "ftp://a/b"):
        with pytest.raises(InvalidCallbackUrl):
            destination(bad)


class FaultyTransport(httpx.AsyncHTTPTransport):
    """The real transport, except that host `faulty.test` raises an error nobody expects."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "faulty.test":
            raise RuntimeError("a bug below httpx")
        return await super().handle_async_request(request)


async def test_unusable_urls_and_any_error_leave_delivery_going(
    receiver: CallbackReceiver,
) -> None:
    client = httpx.AsyncClient(transport=FaultyTransport(), timeout=5)
    sender = CallbackSender(fast(callback_concurrency=2, callback_per_destination=1), client)
    sender.start()
    for _ in range(20):
        sender.submit("http://[::1/generated", {})  # httpx.InvalidURL
        sender.submit("http://xn--a/generated", {})  # an IDNA error when the host is read
        sender.submit("http://faulty.test/generated", {})
    sender.submit(f"{receiver.url}/generated", {"ok": True})
    ok = await asyncio.to_thread(receiver.wait_for, "/generated", bool, 10)
    assert ok == [{"ok": True}]
    assert await sender.drain(timeout_s=10)
    await sender.close()
    stats = sender.stats()
    assert (stats.sent, stats.dropped_invalid, stats.dropped_failed) == (1, 40, 20)


async def test_a_tarpit_delays_only_its_own_callbacks(receiver: CallbackReceiver) -> None:
    settings = fast(callback_concurrency=4, callback_per_destination=2, callback_timeout_s=60)
    sender = CallbackSender(settings)
    sender.start()
    with Tarpit() as tarpit:
        for i in range(50):
            sender.submit(f"{tarpit.url}/generated", {"i": i})
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        began = loop.time()
        sender.submit(f"{receiver.url}/validated", {"ok": True})
        while not receiver.bodies("/validated"):
            assert loop.time() - began < 5, "the honest callback waited behind the tarpit"
            await asyncio.sleep(0.02)
        assert tarpit.accepted == 2
        stats = sender.stats()
        assert (stats.sent, stats.pending, stats.destinations) == (1, 50, 1)
        await sender.close()
    assert sender.stats().dropped_overflow == 50


async def test_a_callback_past_its_deadline_is_dropped_as_expired() -> None:
    sender = CallbackSender(fast(callback_deadline_s=0.3, callback_attempts=100))
    sender.start()
    with Tarpit() as tarpit:
        sender.submit(f"{tarpit.url}/generated", {})
        assert await sender.drain(timeout_s=5)
    await sender.close()
    stats = sender.stats()
    assert (stats.dropped_expired, stats.dropped_failed, stats.sent) == (1, 0, 0)


async def test_a_full_queue_drops_from_the_longest_queue() -> None:
    sender = CallbackSender(fast(callback_queue=3))
    sender.submit("http://127.0.0.1:9/a", {"flood": 0})
    sender.submit("http://127.0.0.1:9/a", {"flood": 1})
    sender.submit("http://127.0.0.2:9/b", {"honest": 0})
    sender.submit("http://127.0.0.1:9/a", {"flood": 2})
    assert sender.stats().dropped_overflow == 1
    assert sender.stats().destinations == 2
    await sender.close()


async def test_a_refusing_4xx_is_dropped_at_once_and_a_429_retried(
    receiver: CallbackReceiver,
) -> None:
    receiver.status_code = 400
    sender = CallbackSender(fast(callback_attempts=5))
    sender.start()
    sender.submit(f"{receiver.url}/generated", {"i": 0})
    assert await sender.drain(timeout_s=10)
    stats = sender.stats()
    assert (stats.dropped_refused, stats.retried, stats.dropped_failed) == (1, 0, 0)
    assert stats.last_error is not None and stats.last_error.endswith("HTTP 400")
    receiver.status_code = 429
    sender.submit(f"{receiver.url}/generated", {"i": 1})
    assert await sender.drain(timeout_s=10)
    await sender.close()
    stats = sender.stats()
    assert (stats.dropped_refused, stats.retried, stats.dropped_failed) == (1, 4, 1)


def test_the_policy_is_read_from_the_settings() -> None:
    policy = CallbackPolicy.of(fast(callback_queue=7, callback_per_destination=3))
    assert (policy.callback_queue, policy.callback_per_destination) == (7, 3)
    assert policy.callback_backoff_s == 0.01 and policy.callback_attempts == 10
