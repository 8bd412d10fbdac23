"""CallbackSender against a real HTTP receiver: order, retries while down, bounded buffer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mlnode.common.callbacks import CallbackSender, callback_url
from mlnode.common.testing import wait_until
from mlnode.common.testing.callback_receiver import CallbackReceiver


@pytest.fixture
def sender() -> Iterator[CallbackSender]:
    s = CallbackSender(max_pending=5, timeout_s=2, backoff_initial_s=0.05, backoff_max_s=0.2)
    s.start()
    yield s
    s.close(flush_timeout_s=0)


def test_url_join() -> None:
    assert callback_url("http://h:1/base/", "/generated") == "http://h:1/base/generated"
    assert callback_url("http://h:1", "validated") == "http://h:1/validated"


def test_delivers_in_order(sender: CallbackSender) -> None:
    with CallbackReceiver() as receiver:
        for i in range(4):
            assert sender.submit(receiver.url, "generated", {"i": i})
        bodies = receiver.wait_for("generated", lambda b: len(b) == 4, timeout_s=10)
    assert [b["i"] for b in bodies] == [0, 1, 2, 3]
    stats = sender.stats()
    assert (stats.sent, stats.pending, stats.dropped) == (4, 0, 0)


def test_retries_while_receiver_is_down(sender: CallbackSender) -> None:
    receiver = CallbackReceiver()
    for i in range(3):
        sender.submit(receiver.url, "validated", {"i": i})
    time.sleep(0.5)
    assert sender.stats().pending == 3
    assert sender.stats().retries >= 2
    assert sender.stats().last_error is not None
    with receiver:
        bodies = receiver.wait_for("validated", lambda b: len(b) == 3, timeout_s=10)
    assert [b["i"] for b in bodies] == [0, 1, 2]
    assert sender.stats().dropped == 0


def test_retries_on_server_errors(sender: CallbackSender) -> None:
    with CallbackReceiver() as receiver:
        receiver.status_code = 503
        sender.submit(receiver.url, "generated", {"i": 0})
        time.sleep(0.3)
        assert sender.stats().pending == 1
        receiver.status_code = 200
        receiver.wait_for("generated", lambda b: len(b) == 1, timeout_s=10)


def test_full_buffer_drops_and_counts(sender: CallbackSender) -> None:
    receiver = CallbackReceiver()
    accepted = [sender.submit(receiver.url, "generated", {"i": i}) for i in range(7)]
    assert accepted == [True] * 5 + [False] * 2
    stats = sender.stats()
    assert (stats.pending, stats.dropped) == (5, 2)
    assert "buffer full" in (stats.last_error or "")


def test_refused_callback_is_dropped_not_retried(sender: CallbackSender) -> None:
    with CallbackReceiver() as receiver:
        receiver.status_code = 400
        sender.submit(receiver.url, "generated", {"i": 0})
        wait_until(lambda: sender.stats().dropped, timeout_s=10, what="a dropped callback")
    stats = sender.stats()
    assert (stats.dropped, stats.pending, stats.sent) == (1, 0, 0)


def test_an_unusable_url_is_dropped_and_delivery_goes_on(sender: CallbackSender) -> None:
    with CallbackReceiver() as receiver:
        sender.submit("http://[::1", "generated", {"i": 0})  # httpx.InvalidURL
        sender.submit("http://xn--a", "generated", {"i": 1})  # an IDNA error
        sender.submit(receiver.url, "generated", {"i": 2})
        bodies = receiver.wait_for("generated", lambda b: len(b) == 1, timeout_s=10)
    assert bodies == [{"i": 2}]
    stats = sender.stats()
    assert (stats.dropped, stats.sent) == (2, 1)


def test_close_counts_undelivered() -> None:
    s = CallbackSender(backoff_initial_s=0.05)
    s.start()
    s.submit(CallbackReceiver().url, "generated", {})
    s.close(flush_timeout_s=0.2)
    assert s.stats().dropped == 1
    assert s.stats().pending == 0
