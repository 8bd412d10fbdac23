"""Throughput of the signed tensor stream against plain unsigned gRPC with the same chunking.

The receiver runs in its own process (as a peer would). The plain stream is the leanest gRPC can
do: raw byte messages of the same chunk size, no protobuf, no hashing, no signature, written
into one preallocated buffer just like the signed stream's chunks.
Sizes are in KiB; by default 64 KiB, 1 MiB, 64 MiB and 512 MiB.
Usage: python transport_bench.py [--sizes-kib 64 1024 65536 524288] [--seconds 3]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
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


def measure(run: Callable[[], None], nbytes: int, seconds: float, min_reps: int) -> float:
    """MB/s of the best of repeated runs, repeated for at least `seconds` and `min_reps`."""
    best = float("inf")
    reps = 0
    start = time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return nbytes / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-kib", type=int, nargs="+", default=[64, 1024, 65536, 524288])
    parser.add_argument("--seconds", type=float, default=3.0)
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
        channel = grpc.insecure_channel(f"127.0.0.1:{plain_port}", channel_options(settings))
        push = channel.stream_unary(PLAIN)
        report(sender, push, settings.chunk_bytes, args.sizes_kib, args.seconds)
        channel.close()
        sender.stop()
    finally:
        child.stdin.close()
        child.wait(10)


def handshake_per_call(sender: GrpcTransport, peer_id: str) -> None:
    """Turn off the handshake made ahead (as before it existed): one Hello round trip per send."""
    client = sender._client(peer_id)
    client.timeouts = dataclasses.replace(client.timeouts, prefetch_s=0.0)
    client._ready.clear()


def report(sender: GrpcTransport, push, chunk_bytes: int, sizes: list[int], seconds: float) -> None:
    """Print one line per size: signed MB/s (handshake ahead, and per call), plain MB/s, ratios."""
    counter = iter(range(1 << 30))
    print(f"chunk {chunk_bytes // 1024} KiB; receiver in its own process; best of runs")
    print(
        f"{'size':>9} {'signed MB/s':>12} {'per-call hs':>12} {'plain MB/s':>11} {'ratio':>6}"
        f" {'ratio per-call hs':>18}"
    )
    for kib in sizes:
        nbytes = kib * 1024
        tensor = torch.randint(-128, 127, (nbytes,), dtype=torch.int8)
        reps = 2 if nbytes >= 512 * MIB else 5

        def signed(t: torch.Tensor = tensor) -> None:
            sender.send("receiver", {"x": t}, "bench", f"r{next(counter)}")

        def plain(t: torch.Tensor = tensor) -> None:
            push(plain_messages(t, chunk_bytes))

        plain_rate = measure(plain, nbytes, seconds, reps)
        signed_rate = measure(signed, nbytes, seconds, reps)
        prefetch = sender._client("receiver").timeouts
        handshake_per_call(sender, "receiver")
        per_call_rate = measure(signed, nbytes, seconds, reps)
        sender._client("receiver").timeouts = prefetch
        size = f"{kib} KiB" if kib < 1024 else f"{kib // 1024} MiB"
        print(
            f"{size:>9} {signed_rate:>12.0f} {per_call_rate:>12.0f} {plain_rate:>11.0f}"
            f" {signed_rate / plain_rate:>6.2f} {per_call_rate / plain_rate:>18.2f}"
        )


if __name__ == "__main__":
    main()
