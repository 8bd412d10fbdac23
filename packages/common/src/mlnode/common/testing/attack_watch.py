"""What honest users see while an attack runs: `/livez` latency and the peak RSS of process trees.

    with AttackWatch(node.url, pids=[node.proc.pid, engine_pid]) as watch:
        ...  # the attack, beside honest traffic
    assert watch.livez_p99_s() < 0.25 and watch.peak_rss_bytes() < 3 << 30

A failed or refused `/livez` counts as an infinitely slow one, so a node that stops answering fails
the latency bound instead of being skipped.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Collection, Sequence
from types import TracebackType

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
        self._peaks = dict.fromkeys(self._pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    ok = client.get(self._url).status_code == 200
                except httpx.HTTPError:
                    ok = False
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)
