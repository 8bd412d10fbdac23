"""PoC v2 maths throughput: nonce input embeddings per second, and the artifact read-out.

Usage: python bench_poc_math.py [--device cpu|cuda] [--seq-len 1024] [--hidden 4096] [--batch 4]
    [--dtype bfloat16] [--repeats 3] [--threads N]
Each figure is the best of `repeats` runs after a warm-up; numbers are for this machine and load.
The input line also reports the exact int64 murmur path, to show what the int32 path saves.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from mlnode.pow.poc import rng
from mlnode.pow.poc.artifacts import artifacts_from_hidden
from mlnode.pow.poc.inputs import nonce_inputs

BLOCK_HASH = "bench-block"
KEY = "bench-key"


def best_of(repeats: int, fn: Callable[[], object], device: torch.device) -> float:
    """Fastest time of `fn` over `repeats` runs (after one warm-up).

    On CPU this is process CPU time divided by the thread count, which a shared machine's load
    disturbs less than wall time; on CUDA it is wall time.
    """
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        else:
            start = time.process_time()
            fn()
            times.append((time.process_time() - start) / torch.get_num_threads())
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    nonces = list(range(args.batch))

    def inputs() -> object:
        return nonce_inputs(
            BLOCK_HASH, KEY, nonces, args.seq_len, args.hidden, dtype, device=device
        )

    fast = best_of(args.repeats, inputs, device)
    values = args.batch * args.seq_len * args.hidden
    print(
        f"inputs  seq_len={args.seq_len} H={args.hidden} {args.dtype} on {device} "
        f"({torch.get_num_threads()} threads): {args.batch / fast:.2f} nonces/s, "
        f"{values / fast / 1e6:.1f} M normals/s (int32 murmur path: {rng._wraps_exactly(device)})"
    )
    rng._wraps_exactly.cache_clear()
    rng._mixed_counters.cache_clear()
    original = rng._wraps_exactly
    rng._wraps_exactly = lambda _device: False  # type: ignore[assignment]
    try:
        exact = best_of(1, inputs, device)
    finally:
        rng._wraps_exactly = original
        rng._mixed_counters.cache_clear()
    print(
        f"inputs  exact int64 murmur path: {args.batch / exact:.2f} nonces/s",
        f"({exact / fast:.1f}x slower)",
    )

    hidden = torch.randn(256, args.hidden, device=device, dtype=dtype)
    many = list(range(256))
    readout = best_of(
        args.repeats, lambda: artifacts_from_hidden(hidden, BLOCK_HASH, KEY, many, 12), device
    )
    print(f"artifacts k_dim=12 H={args.hidden}: {256 / readout:.0f} nonces/s (batch 256)")


if __name__ == "__main__":
    main()
