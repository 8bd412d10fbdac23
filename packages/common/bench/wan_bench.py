"""The signed transport against plain gRPC over a shaped WAN, before and after tuning.

The WAN is `mlnode.common.testing.shaping_relay`.

The receiver runs in its own process (as in `transport_bench`); every call goes through a relay
on loopback that adds half the RTT each way and caps the rate. "before" makes one handshake
round trip per push (as the transport did); "ahead" single pushes with the handshake made
ahead; "stream" push streams (what `send` does now: one handshake for many pushes); "+window"
adds a fixed 8 MiB stream window (`grpc.http2.lookahead_bytes`) on both ends to that.
Plain gRPC gets the same channel options as the transport in each row, so each ratio compares
like with like.
Usage: python wan_bench.py [--rtt-ms 50 150] [--rate-mbit 100] [--sizes-kib 1024 16384]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable

import grpc
import torch
import transport_bench

from mlnode.common.testing.shaping_relay import ShapingRelay
from mlnode.common.transport import transport as transport_module
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.peers import KnownPeers, Peer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.transport import GrpcTransport

SHIPPED = transport_module.channel_options
WINDOW_BYTES = 8 << 20


def windowed(settings: TransportSettings) -> list[tuple[str, int]]:
    """The shipped options plus a fixed stream window."""
    return [*SHIPPED(settings), ("grpc.http2.lookahead_bytes", WINDOW_BYTES)]


def use_options(window: bool) -> None:
    """Both ends read `channel_options` when they open a channel or a server."""
    transport_module.channel_options = windowed if window else SHIPPED  # type: ignore[assignment]
    transport_bench.channel_options = transport_module.channel_options  # type: ignore[attr-defined]


def one_row(mode: str, rtt_s: float, rate_bps: float, sizes: list[int], reps: int) -> list[str]:
    window = mode == "+window"
    use_options(window)
    settings = TransportSettings(host="127.0.0.1", port=0)
    if mode in ("before", "ahead"):  # single pushes, as the transport sent them
        settings = settings.model_copy(update={"stream_pushes": 0})
    me = Identity.generate()
    flag = ["--window"] if window else []
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", base64.b64encode(me.public_key).decode(), *flag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert child.stdout is not None
        signed_port, plain_port, key = child.stdout.readline().split()
        signed_relay = ShapingRelay(int(signed_port), rtt_s, rate_bps).start()
        plain_relay = ShapingRelay(int(plain_port), rtt_s, rate_bps).start()
        peers = KnownPeers()
        peers.put(Peer("receiver", base64.b64decode(key), f"127.0.0.1:{signed_relay.port}"))
        sender = GrpcTransport(settings, identity=me, peers=peers)
        options = transport_module.channel_options(settings)
        channel = grpc.insecure_channel(f"127.0.0.1:{plain_relay.port}", options)
        push = channel.stream_unary(transport_bench.PLAIN)
        if mode == "before":
            handshake_per_call(sender, "receiver")
        counter = iter(range(1 << 30))
        for kib in sizes:
            tensor = torch.randint(-128, 127, (kib * 1024,), dtype=torch.int8)

            def signed(t: torch.Tensor = tensor) -> None:
                sender.send("receiver", {"x": t}, "bench", f"r{next(counter)}")

            def plain(t: torch.Tensor = tensor) -> None:
                push(transport_bench.plain_messages(t, settings.chunk_bytes))

            plain_first, plain_rate = best(plain, kib * 1024, reps)
            signed_first, signed_rate = best(signed, kib * 1024, reps)
            lines.append(
                f"{mode:<8}{rtt_s * 1000:>4.0f} ms{kib // 1024:>6} MiB"
                f"{signed_rate:>13.1f}{plain_rate:>12.1f}{signed_rate / plain_rate:>7.2f}"
                f"{signed_first:>14.1f}{plain_first:>13.1f}"
            )
            print(lines[-1], flush=True)
        channel.close()
        sender.stop()
        signed_relay.stop()
        plain_relay.stop()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    return lines


def handshake_per_call(sender: GrpcTransport, peer_id: str) -> None:
    """Turn off the handshake made ahead (as before it existed): one Hello round trip per send."""
    client = sender._client(peer_id)
    client.timeouts = dataclasses.replace(client.timeouts, prefetch_s=0.0)
    client._ready.clear()


def best(run: Callable[[], None], nbytes: int, reps: int) -> tuple[float, float]:
    """MB/s of the first run (a fresh connection) and of the fastest of `reps` more."""
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return nbytes / times[0] / 1e6, nbytes / min(times[1:]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[50.0, 150.0])
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--sizes-kib", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--serve", default=None)
    parser.add_argument("--window", action="store_true")
    args = parser.parse_args()
    if args.serve is not None:
        use_options(args.window)
        transport_bench.serve(args.serve)
        return
    print(
        f"relay on loopback: RTT as given, {args.rate_mbit:.0f} Mbit/s each way, no loss;"
        f" receiver in its own process; MB/s best of {args.reps} after the first call"
    )
    print(
        f"{'tuning':<8}{'RTT':>7}{'size':>10}{'signed MB/s':>13}{'plain MB/s':>12}{'ratio':>7}"
        f"{'signed first':>14}{'plain first':>13}"
    )
    for rtt_ms in args.rtt_ms:
        for mode in ("before", "ahead", "stream", "+window"):
            one_row(mode, rtt_ms / 1000, args.rate_mbit * 1e6, args.sizes_kib, args.reps)


if __name__ == "__main__":
    main()
