"""What hardening tests watch while an attack runs: liveness latency and memory of a node.

`Watch` pings a `/livez` URL and samples the resident memory of a process tree, each from its
own thread, until stopped; it reports the p99 latency, failures and the peak RSS. `raw_exchange`
sends a request head and a body over a plain socket, reading as it sends, so an answer that comes
before the body is complete (a 413) is seen the way a careful client sees it.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx

from mlnode.common.testing.schema_fuzz import tree_rss


@dataclass
class WatchReport:
    """Latencies of the liveness pings (seconds), their failures, the peak RSS (bytes)."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def p99(self) -> float:
        """99th percentile latency; infinite when no ping succeeded."""
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Watch:
    """Pings `livez_url` every `interval_s` and samples the RSS of `pid`'s tree."""

    def __init__(self, livez_url: str, pid: int, interval_s: float = 0.02) -> None:
        self.url = livez_url
        self.pid = pid
        self.interval_s = interval_s
        self.report = WatchReport()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._ping, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # A short attack must still be seen by at least one ping and one memory sample.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            (self.report.latencies or self.report.failures) and self.report.peak_rss
        ):
            time.sleep(0.01)
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _ping(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    answer = client.get(self.url)
                    if answer.status_code != 200:
                        self.report.failures.append(f"status {answer.status_code}")
                except httpx.HTTPError as exc:
                    self.report.failures.append(repr(exc))
                self.report.latencies.append(time.perf_counter() - began)
                self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.report.peak_rss = max(self.report.peak_rss, tree_rss(self.pid))
            self._stop.wait(0.05)


def raw_exchange(
    port: int, head: bytes, body_piece: bytes = b"", total: int = 0, timeout_s: float = 30.0
) -> tuple[bytes, int]:
    """Send `head`, then `body_piece` until `total` bytes or an answer; the answer, bytes sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    answer, sent = b"", 0
    try:
        sock.sendall(head)
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(body_piece[: total - sent])
            except OSError:
                break
            sent += min(len(body_piece), total - sent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer and _complete(answer):
                break
    finally:
        sock.close()
    return answer, sent


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False
