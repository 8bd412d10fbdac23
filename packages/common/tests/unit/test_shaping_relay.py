"""The bench's WAN relay: bytes arrive intact, no sooner than the RTT and the rate cap allow."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mlnode.common.testing.shaping_relay import Link, ShapingRelay


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_a_round_trip_takes_the_rtt_and_the_rate_cap(echo_port: int) -> None:
    relay = ShapingRelay(echo_port, rtt_s=0.2, rate_bps=8e6).start()
    payload = bytes(range(256)) * 400  # 100 KiB: 0.1 s at 8 Mbit/s, each way
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as conn:
            start = time.monotonic()
            conn.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += conn.recv(65536)
            elapsed = time.monotonic() - start
    finally:
        relay.stop()
    assert got == payload
    # Two one-way delays of 0.1 s, and the bytes serialised at the cap on the way out and back.
    assert elapsed >= 0.2 + 0.1


def test_link_queues_behind_earlier_bytes() -> None:
    link = Link(delay_s=0.05, rate_bps=8e6, buffer_bytes=1 << 20)
    first = link.arrival(0.0, 100_000)  # 0.1 s on the wire
    second = link.arrival(0.0, 100_000)
    assert first == pytest.approx(0.15)
    assert second == pytest.approx(0.25)
    assert link.arrival(1.0, 0) == pytest.approx(1.05)
