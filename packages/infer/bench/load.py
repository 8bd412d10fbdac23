"""A small HTTP/1.1 keep-alive load generator on asyncio streams (loopback only, bounded)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self, label: str) -> str:
        return (
            f"{label:<28} {self.rps:9.1f} req/s   p50 {self.pct(0.5):7.2f} ms   "
            f"p99 {self.pct(0.99):7.2f} ms   mean {statistics.fmean(self.latencies_ms):7.2f} ms"
            + (f"   errors {self.errors}" if self.errors else "")
        )


def _request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            key, value = line.split(b":", 1)
            headers[key.strip().lower()] = value.strip()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    else:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _worker(port: int, payload: bytes, count: int, out: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(payload)
            status = await _read_response(reader)
            out.append((time.perf_counter() - started) * 1000)
            errors += status != 200
    finally:
        writer.close()
    return errors


async def run_load(port: int, path: str, body: bytes, requests: int, concurrency: int) -> Result:
    """`requests` POSTs split over `concurrency` keep-alive connections."""
    payload = _request(port, path, body)
    latencies: list[float] = []
    per = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    errors = await asyncio.gather(*(_worker(port, payload, n, latencies) for n in per))
    return Result(requests, time.perf_counter() - started, latencies, sum(errors))
