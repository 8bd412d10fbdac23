"""Throughput of the signed tensor transport against plain unsigned gRPC with the same chunking.

The receiver runs in its own process (as a peer would). The plain stream is the leanest gRPC can
do: one call per push of raw byte messages of the same chunk size, no protobuf, no hashing, no
signature, written into one preallocated buffer just like the signed stream's chunks. Signed
pushes go on a push stream (`stream`, the default) and as one `Push` call each with the
handshake made ahead (`single`, streams off). Modes are interleaved (the order rotates each
round); each prints the median MB/s of its rounds and their spread.
Sizes are in KiB; by default 64 KiB, 1 MiB, 64 MiB and 512 MiB.
Usage: python transport_bench.py [--sizes-kib 64 1024 65536 524288] [--rounds 5] [--seconds 1]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import torch

from mlnode.common.transport.auth import Identity
from mlnode.common.transport.codec import encode, iter_chunks
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport, channel_options

PLAIN = "/bench.Plain/Push"
MIB = 1 << 20


def _plain_push(messages: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    buffer = torch.empty(int(next(messages)), dtype=torch.uint8).numpy()
    filled = 0
    for chunk in messages:
        buffer[filled : filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        filled += len(chunk)
    return str(filled).encode()


def serve(client_key: str) -> None:
    """Receiver process: a GrpcTransport and a plain server; prints their ports and key."""
    settings = TransportSettings(host="127.0.0.1", port=0)
    identity = Identity.generate()
    peers = KnownPeers()
    peers.put(Peer("sender", base64.b64decode(client_key)))
    transport = GrpcTransport(settings, identity=identity, peers=peers)
    transport.start()
    plain = grpc.server(ThreadPoolExecutor(4), options=channel_options(settings))
    handler = grpc.stream_unary_rpc_method_handler(_plain_push)  # bytes in, bytes out
    plain.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Plain", {"Push": handler}),)
    )
    plain_port = plain.add_insecure_port("127.0.0.1:0")
    plain.start()

    done = threading.Event()

    def drain() -> None:
        i = 0
        while not done.is_set():
            if transport.receive("bench", f"r{i}", ["sender"], 0.2):
                i += 1

    threading.Thread(target=drain, daemon=True).start()
    key = base64.b64encode(identity.public_key).decode()
    print(transport.port, plain_port, key, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    done.set()
    plain.stop(0).wait()
    transport.stop()


def plain_messages(tensor: torch.Tensor, chunk_bytes: int) -> Iterator[bytes]:
    """Same chunking as the signed stream, nothing signed or hashed."""
    payload = encode("x", tensor).payload
    yield str(payload.nbytes).encode()
    for piece in iter_chunks(payload, chunk_bytes):
        yield piece.tobytes()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], None], reps: int, receiver: int | None = None) -> tuple[float, float]:
    """(seconds, CPU seconds of this process and `receiver`) `reps` runs take."""
    cpu0 = time.process_time() + (cpu_seconds(receiver) if receiver else 0.0)
    t0 = time.perf_counter()
    for _ in range(reps):
        run()
    wall = time.perf_counter() - t0
    return wall, time.process_time() + (cpu_seconds(receiver) if receiver else 0.0) - cpu0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-kib", type=int, nargs="+", default=[64, 1024, 65536, 524288])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per mode and round")
    parser.add_argument("--serve", default=None)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    settings = TransportSettings(host="127.0.0.1", port=0)
    me = Identity.generate()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", base64.b64encode(me.public_key).decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        signed_port, plain_port, key = child.stdout.readline().split()
        peers = KnownPeers()
        peers.put(Peer("receiver", base64.b64decode(key), f"127.0.0.1:{signed_port}"))
        sender = GrpcTransport(settings, identity=me, peers=peers)
        single_settings = settings.model_copy(update={"stream_pushes": 0})
        single = GrpcTransport(single_settings, identity=me, peers=peers)
        channel = grpc.insecure_channel(f"127.0.0.1:{plain_port}", channel_options(settings))
        push = channel.stream_unary(PLAIN)
        report(
            sender,
            single,
            push,
            settings.chunk_bytes,
            args.sizes_kib,
            args.rounds,
            args.seconds,
            child.pid,
        )
        channel.close()
        single.stop()
        sender.stop()
    finally:
        child.stdin.close()
        child.wait(10)


def report(
    sender: GrpcTransport,
    single: GrpcTransport,
    push: Callable[..., object],
    chunk_bytes: int,
    sizes: list[int],
    rounds: int,
    seconds: float,
    receiver: int,
) -> None:
    """One line per size: MB/s of each mode (median of rounds, spread), ratios to plain, and
    the CPU both processes spent per GB in each mode (what decides on a machine short of cores).
    """
    counter = iter(range(1 << 30))
    print(
        f"chunk {chunk_bytes // 1024} KiB; receiver in its own process; modes interleaved, "
        f"median of {rounds} rounds (min-max)"
    )
    print(
        f"{'size':>9} {'stream MB/s':>20} {'single MB/s':>20} {'plain MB/s':>20}"
        f" {'stream/plain':>13} {'single/plain':>13} {'CPU s/GB stream/single/plain':>29}"
    )
    for kib in sizes:
        nbytes = kib * 1024
        tensor = torch.randint(-128, 127, (nbytes,), dtype=torch.int8)

        def streamed(t: torch.Tensor = tensor) -> None:
            sender.send("receiver", {"x": t}, "bench", f"r{next(counter)}")

        def single_push(t: torch.Tensor = tensor) -> None:
            single.send("receiver", {"x": t}, "bench", f"r{next(counter)}")

        def plain(t: torch.Tensor = tensor) -> None:
            push(plain_messages(t, chunk_bytes))

        modes = {"stream": streamed, "single": single_push, "plain": plain}
        for run in modes.values():  # warm-up: connections, streams, handshakes made ahead
            run()
        # repetitions per round: about `seconds` of the plain stream
        reps = max(1, min(1000, round(seconds / timed(plain, 1)[0])))
        rates: dict[str, list[float]] = {name: [] for name in modes}
        cpu: dict[str, list[float]] = {name: [] for name in modes}
        for r in range(rounds):
            order = list(modes.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for name, run in order:
                wall, used = timed(run, reps, receiver)
                rates[name].append(nbytes * reps / wall / 1e6)
                cpu[name].append(used / (nbytes * reps / 1e9))
        med = {name: statistics.median(values) for name, values in rates.items()}
        cell = {n: f"{med[n]:.0f} ({min(v):.0f}-{max(v):.0f})" for n, v in rates.items()}

        size = f"{kib} KiB" if kib < 1024 else f"{kib // 1024} MiB"
        print(
            f"{size:>9} {cell['stream']:>20} {cell['single']:>20} {cell['plain']:>20}"
            f" {med['stream'] / med['plain']:>13.2f} {med['single'] / med['plain']:>13.2f}"
            f" {'/'.join(f'{statistics.median(cpu[n]):.2f}' for n in modes):>29}",
            flush=True,
        )


if __name__ == "__main__":
    main()
