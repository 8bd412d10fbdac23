"""PoC v2 maths throughput: nonce input embeddings per second, and the artifact read-out.

Usage: python bench_poc_math.py [--device cpu|cuda] [--seq-len 1024] [--hidden 4096] [--batch 4]
    [--dtype bfloat16] [--repeats 3] [--threads N]
Each figure is the best of `repeats` runs after a warm-up; numbers are for this machine and load
(on a shared CPU, the CPU time per nonce is the steadier figure; set OMP_WAIT_POLICY=PASSIVE).
The input lines also report the exact int64 murmur path, to show what the int32 path saves.
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


def best_of(repeats: int, fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Fastest wall time and fastest process CPU time of `fn` over `repeats` runs (after a warm-up).

    CPU time (all threads, user + system) is what a shared machine's load disturbs least.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


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

    fast_wall, fast_cpu = best_of(args.repeats, inputs, device)
    values = args.batch * args.seq_len * args.hidden
    print(
        f"inputs  seq_len={args.seq_len} H={args.hidden} {args.dtype} on {device} "
        f"({torch.get_num_threads()} threads, int32 murmur path: {rng._wraps_exactly(device)}): "
        f"{args.batch / fast_wall:.1f} nonces/s wall ({values / fast_wall / 1e6:.0f} M normals/s), "
        f"{fast_cpu / args.batch * 1000:.0f} ms CPU per nonce"
    )
    rng._wraps_exactly.cache_clear()
    rng._mixed_counters.cache_clear()
    original = rng._wraps_exactly
    rng._wraps_exactly = lambda _device: False  # type: ignore[assignment]
    try:
        exact_wall, exact_cpu = best_of(args.repeats, inputs, device)
    finally:
        rng._wraps_exactly = original
        rng._mixed_counters.cache_clear()
    print(
        f"inputs  exact int64 murmur path: {args.batch / exact_wall:.1f} nonces/s wall, "
        f"{exact_cpu / args.batch * 1000:.0f} ms CPU per nonce"
    )

    hidden = torch.randn(256, args.hidden, device=device, dtype=dtype)
    many = list(range(256))
    readout, _ = best_of(
        args.repeats, lambda: artifacts_from_hidden(hidden, BLOCK_HASH, KEY, many, 12), device
    )
    print(f"artifacts k_dim=12 H={args.hidden}: {256 / readout:.0f} nonces/s wall (batch 256)")


if __name__ == "__main__":
    main()
