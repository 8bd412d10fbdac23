"""Soak: 10,000 idle and half-open connections on an MLNode's inference port while honest
requests flow. Throughput and p50/p99 of the honest load idle vs under the soak, in one run,
against the fake engine; also REST `/api/v1/state` latency and the node's memory.

The node runs with its production limits (60 s to send a head, 75 s idle keep-alive), so the
soak connections stay open for the whole measurement. Sized for a 2-core machine: a few
minutes. Usage: python bench/bench_soak.py [--connections N] [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from load import Result, run_load

from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import tree_rss
from mlnode.infer.testing.support import FAKE_ENGINE

BODY = json.dumps({"prompt": "hi"}).encode()
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def raise_fd_limit(needed: int) -> int:
    """Lift this process's (and so the node's) open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(f"open-file limit {hard} < {needed}: fewer connections will be opened")
    return hard


async def open_soak(port: int, count: int) -> list[Conn]:
    """Half of them send a partial head and stall, half connect and say nothing."""
    conns: list[Conn] = []
    for start in range(0, count, 500):
        batch = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(min(500, count - start))),
            return_exceptions=True,
        )
        for i, item in enumerate(batch):
            if isinstance(item, BaseException):
                continue
            if (start + i) % 2 == 0:
                item[1].write(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-le")
            conns.append(item)
    return conns


async def rest_latency(url: str, count: int) -> list[float]:
    """Milliseconds of `count` sequential GET /api/v1/state."""
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            (await client.get(f"{url}/api/v1/state")).raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def measure(node: MLNodeProcess, args: argparse.Namespace) -> tuple[Result, list[float]]:
    load = await run_load(
        node.inference_port, "/v1/completions", BODY, args.requests, args.concurrency
    )
    return load, await rest_latency(node.url, args.rest_requests)


async def soak(node: MLNodeProcess, args: argparse.Namespace) -> None:
    assert node.proc is not None
    port = node.inference_port
    await run_load(port, "/v1/completions", BODY, 300, 4)  # warm-up
    idle_before, rest_before = await measure(node, args)
    rss_idle = tree_rss(node.proc.pid)
    started = time.perf_counter()
    conns = await open_soak(port, args.connections)
    opened = time.perf_counter() - started
    loaded, rest_loaded = await measure(node, args)
    rss_soak = tree_rss(node.proc.pid)
    alive = sum(not writer.is_closing() for _, writer in conns)
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(1)
    idle_after, rest_after = await measure(node, args)

    best_idle = max(idle_before, idle_after, key=lambda r: r.rps)
    rest_idle = min(rest_before, rest_after, key=p99)
    print(
        f"\nsoak: {len(conns)} connections opened in {opened:.1f} s "
        f"(half a partial head, half silent), {alive} still open after the loaded run"
    )
    print(best_idle.line("  honest, idle (best of 2)"))
    print(loaded.line("  honest, under soak"))
    print(
        f"  throughput ratio {loaded.rps / best_idle.rps:.2f}x   "
        f"p99 {loaded.pct(0.99):.2f} ms vs {best_idle.pct(0.99):.2f} ms idle "
        f"({loaded.pct(0.99) / best_idle.pct(0.99):.2f}x)"
    )
    print(
        f"  REST /api/v1/state p50 {statistics.median(rest_loaded):.2f} ms "
        f"p99 {p99(rest_loaded):.2f} ms under soak vs p50 {statistics.median(rest_idle):.2f} ms "
        f"p99 {p99(rest_idle):.2f} ms idle"
    )
    print(
        f"  node RSS (with engine) {rss_idle / 2**20:.0f} MiB idle, "
        f"{rss_soak / 2**20:.0f} MiB under soak "
        f"(+{(rss_soak - rss_idle) / 2**10 / max(len(conns), 1):.1f} KiB per connection)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rest-requests", type=int, default=200)
    args = parser.parse_args()
    raise_fd_limit(args.connections + 1000)
    env = {"MLNODE_INFER_ENGINE_MODULE": FAKE_ENGINE, "MLNODE_INFER_GPUS": "[]"}
    with tempfile.TemporaryDirectory() as tmp, MLNodeProcess(Path(tmp) / "node", env) as node:
        up = {"model": "fake", "dtype": "auto", "additional_args": []}
        httpx.post(f"{node.url}/api/v1/inference/up", json=up, timeout=120).raise_for_status()
        asyncio.run(soak(node, args))


if __name__ == "__main__":
    main()
