"""What hardening tests watch while an attack runs, and how they send one by hand.

`AttackWatch` pings a node's `/livez` and samples the peak RSS of process trees from a background
thread, beside the attack and honest traffic:

    with AttackWatch(node.url, pids=[node.proc.pid, engine_pid]) as watch:
        ...  # the attack, beside honest traffic
    assert not watch.failures and watch.livez_p99_s() < 0.25 and watch.peak_rss_bytes() < 3 << 30

A failed or refused `/livez` counts as an infinitely slow one (and is listed in `failures`), so a
node that stops answering fails the latency bound instead of being skipped. `raw_exchange` sends
a request head and a body over a plain socket, reading as it sends, so an answer that comes before
the body is complete (a 413) is seen the way a careful client sees it.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from collections.abc import Collection, Sequence

import httpx
import psutil


def tree_rss(pid: int, skip: Collection[int] = ()) -> int:
    """Resident bytes of a process and its descendants, less the subtrees rooted at `skip`."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    skipped: set[int] = set()
    for proc in procs:
        if proc.pid in skip:
            try:
                skipped |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
            except psutil.NoSuchProcess:
                skipped.add(proc.pid)
    total = 0
    for proc in procs:
        if proc.pid in skipped:
            continue
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank `q` percentile (0 < q <= 100) of samples (inf when there are none)."""
    if not samples:
        return math.inf
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class AttackWatch:
    """Samples `{url}/livez` and the RSS of `pids`' trees in a background thread.

    A watched process inside another's tree (an engine under its node) is counted only as itself.
    """

    def __init__(self, url: str, pids: Sequence[int], interval_s: float = 0.05) -> None:
        self._url = f"{url.rstrip('/')}/livez"
        self._pids = list(pids)
        self._interval = interval_s
        self._latencies: list[float] = []
        self.failures: list[str] = []
        self._peaks = dict.fromkeys(self._pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    status = client.get(self._url).status_code
                    ok = status == 200
                    if not ok:
                        self.failures.append(f"status {status}")
                except httpx.HTTPError as exc:
                    ok = False
                    self.failures.append(repr(exc))
                self._latencies.append(time.monotonic() - began if ok else math.inf)
                for pid in self._pids:
                    rss = tree_rss(pid, skip=[p for p in self._pids if p != pid])
                    self._peaks[pid] = max(self._peaks[pid], rss)
                self._stop.wait(self._interval)

    def livez_p99_s(self) -> float:
        """p99 of the `/livez` latencies so far, in seconds."""
        return percentile(list(self._latencies), 99)

    @property
    def samples(self) -> int:
        """`/livez` calls made so far."""
        return len(self._latencies)

    def peak_rss_bytes(self, pid: int | None = None) -> int:
        """The peak RSS of one watched tree (the first when `pid` is None)."""
        return self._peaks[self._pids[0] if pid is None else pid]

    def __enter__(self) -> AttackWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # A short attack must still be seen by at least one ping and one memory sample.
        deadline = time.monotonic() + 10
        while not self._latencies and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(10)


class ChatLoad:
    """Honest chat beside an attack or a miner: completions in a thread until the block ends.

    Every completion must give `max_tokens` tokens, and at least one must finish.
    """

    def __init__(self, chat: httpx.Client, model: str, max_tokens: int = 4) -> None:
        self.chat, self.max_tokens = chat, max_tokens
        self.body = {
            "model": model,
            "messages": [{"role": "user", "content": "w1 w2 w3"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
        }
        self.done, self.count = threading.Event(), 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                answer = self.chat.post("/v1/chat/completions", json=self.body)
                assert answer.status_code == 200, answer.text
                assert answer.json()["usage"]["completion_tokens"] == self.max_tokens
                self.count += 1
            except BaseException as exc:  # reported on exit
                self.errors.append(exc)
                return

    def __enter__(self) -> ChatLoad:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(timeout=120)
        assert not self.errors, self.errors
        assert self.count > 0


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
