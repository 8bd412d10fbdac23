"""Soak: an honest peer pushes 64 MiB tensors while 10,000 hostile connections hold the port.

Three processes: the receiver (a signed transport draining its inbox), the flood (raw TCP
connections: half idle, sending nothing; half half-open calls, a Hello naming the sender's key
or a Push without proof, whose message never comes; closed ones are reopened) and the sender
(this one). The same pushes run with no flood and then under it, in one run; the table gives
throughput, p50 and p99 latency, and the receiver's memory, threads and open descriptors.
Usage: python soak_bench.py [--connections 10000] [--size-mib 64] [--pushes 20]
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from mlnode.common.testing.hostile import Flood, half_open_call, hello_metadata
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.interceptors import HELLO, PUSH
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport

MIB = 1 << 20


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's (and its children's) open-file limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(sender_key: str) -> None:
    """Receiver process: a signed transport that drains its inbox; prints port, key and pid."""
    peers = KnownPeers()
    peers.put(Peer("sender", base64.b64decode(sender_key)))
    identity = Identity.generate()
    transport = GrpcTransport(
        TransportSettings(host="127.0.0.1", port=0), identity=identity, peers=peers
    )
    transport.start()
    done = threading.Event()

    def drain() -> None:
        i = 0
        while not done.is_set():
            if transport.receive("soak", f"r{i}", ["sender"], 0.2):
                i += 1

    threading.Thread(target=drain, daemon=True).start()
    key = base64.b64encode(identity.public_key).decode()
    print(transport.port, key, os.getpid(), flush=True)
    sys.stdin.read()
    done.set()
    transport.stop()


def flood(address: str, count: int, sender_key: str) -> None:
    """Flood process: `count` connections, half idle, half half-open; until stdin ends."""
    hello = half_open_call(address, HELLO, hello_metadata(base64.b64decode(sender_key), "soak"))
    push = half_open_call(address, PUSH, hello_metadata(base64.b64decode(sender_key), "soak"))
    floods = [
        Flood(address, count // 2).start(),
        Flood(address, count // 4, hello).start(),
        Flood(address, count - count // 2 - count // 4, push).start(),
    ]
    while sum(f.opened for f in floods) < count:
        time.sleep(0.1)
    print("ready", flush=True)
    sys.stdin.read()
    for f in floods:
        f.stop()
    opened = sum(f.opened for f in floods)
    closed = sum(f.closed_by_server for f in floods)
    print(f"{opened} {closed}", flush=True)


def receiver_stats(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, threads, open descriptors) of the receiver."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss = int(fields["VmRSS"].split()[0]) / 1024
    return rss, int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


def pushes(
    sender: GrpcTransport, size_mib: int, count: int, first: int
) -> tuple[float, list[float]]:
    """(MB/s over all pushes, each push's seconds)."""
    tensor = torch.randint(-128, 127, (size_mib * MIB,), dtype=torch.int8)
    sender.send("receiver", {"warm": tensor[:1024]}, "soak", f"r{first}")
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        sender.send("receiver", {"x": tensor}, "soak", f"r{first + 1 + i}")
        latencies.append(time.perf_counter() - t0)
    return size_mib * MIB * count / (time.perf_counter() - start) / 1e6, latencies


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * len(ordered) + 0.5) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--serve", default=None)
    parser.add_argument("--flood", nargs=3, default=None)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if args.flood is not None:
        flood(args.flood[0], int(args.flood[1]), args.flood[2])
        return
    limit = raise_fd_limit(args.connections + 2048)
    connections = min(args.connections, limit - 1024)
    me = Identity.generate()
    key = base64.b64encode(me.public_key).decode()
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--serve", key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdin is not None and receiver.stdout is not None
    try:
        port, server_key, pid = receiver.stdout.readline().split()
        peers = KnownPeers()
        peers.put(Peer("receiver", base64.b64decode(server_key), f"127.0.0.1:{port}"))
        sender = GrpcTransport(TransportSettings(), identity=me, peers=peers)
        rows = []
        rate, lat = pushes(sender, args.size_mib, args.pushes, 0)
        rows.append(("idle", rate, lat, receiver_stats(int(pid))))
        attacker = subprocess.Popen(
            [sys.executable, __file__, "--flood", f"127.0.0.1:{port}", str(connections), key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert attacker.stdin is not None and attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        held = receiver_stats(int(pid))
        rate, lat = pushes(sender, args.size_mib, args.pushes, args.pushes + 1)  # drained in order
        rows.append(("flood", rate, lat, receiver_stats(int(pid))))
        attacker.stdin.close()
        opened, closed = attacker.stdout.readline().split()
        attacker.wait(60)
        sender.stop()
        report(rows, args.size_mib, connections, held, int(opened), int(closed))
    finally:
        receiver.stdin.close()
        receiver.wait(30)


def report(
    rows: list[tuple[str, float, list[float], tuple[float, int, int]]],
    size_mib: int,
    connections: int,
    held: tuple[float, int, int],
    opened: int,
    closed: int,
) -> None:
    """The table and the ratios flood/idle."""
    print(
        f"soak: {size_mib} MiB signed pushes, idle vs {connections} hostile connections "
        f"(half idle TCP, half half-open calls); receiver in its own process"
    )
    head = ("run", "MB/s", "p50 ms", "p99 ms", "RSS MiB", "threads", "fds")
    print(" ".join(f"{h:>8}" for h in head))
    for name, rate, lat, (rss, threads, fds) in rows:
        p50, worst = statistics.median(lat) * 1e3, p99(lat) * 1e3
        cells = (name, f"{rate:.0f}", f"{p50:.0f}", f"{worst:.0f}", f"{rss:.0f}", threads, fds)
        print(" ".join(f"{c:>8}" for c in cells))
    (_, idle_rate, idle_lat, _), (_, flood_rate, flood_lat, _) = rows
    print(
        f"flood/idle: throughput {flood_rate / idle_rate:.2f}, p99 latency "
        f"{p99(flood_lat) / p99(idle_lat):.2f}; receiver held {held[2]} descriptors and "
        f"{held[0]:.0f} MiB with the flood up; the flood opened {opened} connections, "
        f"{closed} were closed by the receiver (set-up or idle deadlines) and reopened"
    )


if __name__ == "__main__":
    main()
