"""PoW throughput: model build time, nonces/s, and the split between input generation and forward.

Usage: python bench_pow.py [--device cpu|cuda] [--seconds S] [--configs a,b] [--threads N]
    [--cpu-matmul f32|f16]
Each config is measured once after a warm-up batch; numbers are for this machine and load.
"nonces/s" makes inputs in a thread ahead of the forward pass (as the service does), "seq n/s"
makes them in between; the ms/nonce columns split the overlapped run's time by stage.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

import torch

from mlnode.pow.v1.compute.devices import plan_groups
from mlnode.pow.v1.compute.engine import DistanceEngine
from mlnode.pow.v1.compute.model import PowModel
from mlnode.pow.v1.compute.nonces import NonceShare
from mlnode.pow.v1.compute.params import ModelParams

CONFIGS: dict[str, tuple[ModelParams, int]] = {
    "vector-A": (ModelParams(128, 4, 4, 4, 512, 1.3, 256, 1e-5, 10000.0, False, 16), 64),
    "dim512-16L-seq16": (ModelParams(512, 16, 8, 8, 8196, 1.3, 256, 1e-5, 10000.0, False, 16), 64),
    "testnet": (ModelParams(1024, 32, 32, 32, 8196, 10.0, 2048, 1e-5, 10000.0, False, 128), 256),
}
BLOCK_HASH = "bench-block"
KEY = "bench-key"


@dataclass
class Result:
    """One config's figures."""

    name: str
    device: str
    build_s: float
    batch_size: int
    nonces_per_s: float
    sequential_nonces_per_s: float
    input_ms_per_nonce: float
    forward_ms_per_nonce: float
    distance_ms_per_nonce: float


def measure(
    name: str, device: str, seconds: float, cpu_matmul: torch.dtype, input_workers: int | None
) -> Result:
    """Build the model, then stream batches for about `seconds` with inputs made ahead."""
    params, batch_size = CONFIGS[name]
    groups = plan_groups(device, params)
    start = time.perf_counter()
    model = PowModel(BLOCK_HASH, params, [torch.device(d) for d in groups[0]], cpu_matmul)
    if device == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - start
    engine = DistanceEngine(model, batch_size, input_workers)
    engine.distances(KEY, list(range(engine.batch_size)))
    warm = engine.timings
    engine.timings = type(warm)()
    share = NonceShare(0, 1)
    deadline = time.perf_counter() + seconds
    stop = threading.Event()
    start = time.perf_counter()
    count = 0
    for nonces, _ in engine.stream(KEY, share.batches(engine.batch_size), stop.is_set):
        count += len(nonces)
        if time.perf_counter() > deadline:
            stop.set()
    elapsed = time.perf_counter() - start
    t = engine.timings
    per = 1000 / max(t.nonces, 1)
    sequential = sequential_rate(engine, seconds / 2)
    return Result(
        name,
        ",".join(groups[0]),
        build_s,
        engine.batch_size,
        count / elapsed,
        sequential,
        t.input_s * per,
        t.forward_s * per,
        t.distance_s * per,
    )


def sequential_rate(engine: DistanceEngine, seconds: float) -> float:
    """Nonces/s when inputs are made between forward passes instead of ahead of them."""
    timings = engine.timings
    count, nonce, start = 0, 10**9, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.distances(KEY, list(range(nonce, nonce + engine.batch_size)))
        count += engine.batch_size
        nonce += engine.batch_size
    engine.timings = timings
    return count / (time.perf_counter() - start)


def main() -> None:
    """Measure the chosen configs and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--configs", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cpu-matmul", choices=["f32", "f16"], default="f32")
    parser.add_argument("--input-workers", type=int, default=None, help="input threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    default = "vector-A,dim512-16L-seq16" + (",testnet" if args.device == "cuda" else "")
    names = (args.configs or default).split(",")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
        f"cpu matmul {args.cpu_matmul}"
    )
    print(
        f"{'config':18} {'device':8} {'build s':>8} {'batch':>6} {'nonces/s':>9} {'seq n/s':>8} "
        f"{'input ms/n':>10} {'fwd ms/n':>9} {'dist ms/n':>9}"
    )
    for name in names:
        matmul = torch.float16 if args.cpu_matmul == "f16" else torch.float32
        r = measure(name, args.device, args.seconds, matmul, args.input_workers)
        print(
            f"{r.name:18} {r.device:8} {r.build_s:8.2f} {r.batch_size:6d} {r.nonces_per_s:9.1f} "
            f"{r.sequential_nonces_per_s:8.1f} "
            f"{r.input_ms_per_nonce:10.3f} {r.forward_ms_per_nonce:9.3f} "
            f"{r.distance_ms_per_nonce:9.3f}"
        )


if __name__ == "__main__":
    main()
