"""PoC v2 checks for a GPU machine with PyTorch and transformers but no vLLM (SPEC §6.1, §6.2).

Prints two tables, one call's worth of numbers to report:

1. The k-dim pick order: `torch.topk(-scores, k, sorted=False)` on `--device` against the rule of
   SPEC §2.6 (`cuda_order_smallest`) at batch sizes 1, 64 and 256 (256 rows take the kernel's
   multi-block path), on vectors-A's nonces and on network-sized hidden widths; plus whether the
   rule gives vectors-A's `picked_indices`. On CUDA every agreement must be 1.000. On the CPU the
   kernel is another one, whose order SPEC §2.6 says differs: expect low agreement there.
2. Each tiny model's artifacts through the test-only transformers forward
   (`mlnode.pow.poc.testing`, the model's own MoE routing) on `--device`, float32 and bfloat16,
   against the vector files made on the CPU: max / mean L2 and nonces over 0.02 / 0.2 / 0.4,
   beside the file's own bf16 noise.

Runs with only torch, transformers and this package's sources:
`PYTHONPATH=packages/pow/src python packages/pow/bench/gpu_torch_checks.py [--device cpu]`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mlnode.pow.poc.artifacts import cuda_order_smallest, pick_seed_string
from mlnode.pow.poc.rng import murmur3_32, seed_from_string
from mlnode.pow.poc.testing import VECTOR_SETS, ReferenceForward, artifact_distances

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "poc_v2"
PICK_BATCHES = (1, 64, 256)
#: (hidden, k): vectors-A's, then widths of the network's models (k 12 prefill, 256 decode).
PICK_SHAPES = ((256, 12), (5120, 12), (8192, 256))


def pick_scores(
    block_hash: str, public_key: str, nonces: list[int], k: int, hidden: int, device: str
) -> torch.Tensor:
    """`[B, H]` pick scores `murmur(d, seed(pick string))`, as the reference builds them."""
    keys = torch.arange(hidden, dtype=torch.int64, device=device)
    rows = [
        murmur3_32(keys, seed_from_string(pick_seed_string(block_hash, public_key, n, k)))
        for n in nonces
    ]
    return torch.stack(rows).to(torch.int64)


def pick_order_rows(vectors: dict[str, Any], device: str) -> list[list[str]]:
    """Agreement of the device's top-k kernel with the SPEC rule, per batch and shape."""
    params = vectors["params"]
    bh, pk = params["block_hash"], params["public_key"]
    rows = []
    for hidden, k in PICK_SHAPES:
        for batch in PICK_BATCHES:
            nonces = [i % 64 for i in range(batch)]
            scores = pick_scores(bh, pk, nonces, k, hidden, device)
            kernel = torch.topk(-scores, k, dim=-1, largest=True, sorted=False).indices.cpu()
            rule = cuda_order_smallest(scores.cpu(), k)
            agree = float((kernel == rule).all(dim=-1).float().mean())
            same_set = float(
                (kernel.sort(dim=-1).values == rule.sort(dim=-1).values).all(dim=-1).float().mean()
            )
            rows.append([str(hidden), str(k), str(batch), f"{agree:.3f}", f"{same_set:.3f}"])
    intermediates = vectors["intermediates"]
    nonces = [item["nonce"] for item in intermediates]
    rule = cuda_order_smallest(
        pick_scores(bh, pk, nonces, params["k_dim"], 256, "cpu"), params["k_dim"]
    )
    matches = all(
        r.tolist() == item["picked_indices"] for r, item in zip(rule, intermediates, strict=True)
    )
    rows.append(["rule vs vectors-A picked_indices", "", "", "yes" if matches else "NO", ""])
    return rows


def artifact_row(name: str, dtype: torch.dtype, device: str, batch: int) -> list[str]:
    """One model and dtype on `device` against its vector file."""
    model_dir, vector_file = VECTOR_SETS[name]
    vectors = json.loads((DATA / vector_file).read_text())
    params = vectors["params"]
    started = time.perf_counter()
    ref = ReferenceForward(DATA / model_dir, dtype=dtype, device=device)
    artifacts = ref.artifacts(
        params["block_hash"],
        params["public_key"],
        list(range(64)),
        params["seq_len"],
        params["k_dim"],
        batch_size=batch,
    )
    elapsed = time.perf_counter() - started
    to_fp32 = list(artifact_distances(artifacts, vectors["artifacts_float32"]).values())
    same_dtype = "artifacts_bfloat16" if dtype == torch.bfloat16 else "artifacts_float32"
    to_same = list(artifact_distances(artifacts, vectors.get(same_dtype, [])).values())
    noise = vectors.get("noise_l2", {}).get("hf_float32 vs hf_bfloat16", {})
    return [
        name,
        str(dtype).removeprefix("torch."),
        f"{len(artifacts)}/64",
        f"{max(to_fp32):.3g}",
        f"{statistics.fmean(to_fp32):.3g}",
        "/".join(str(sum(d > t for d in to_fp32)) for t in (0.02, 0.2, 0.4)),
        f"{max(to_same):.3g}" if to_same else "-",
        f"{noise['max']:.3g}" if "max" in noise else "-",
        f"{elapsed:.1f}",
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain text table."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the checks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--models", default=",".join(VECTOR_SETS), help="comma-separated")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    parser.add_argument("--batch", type=int, default=16, help="nonces per forward")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the CPU numbers")
        return 2
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({where}), torch {torch.__version__}")
    vectors_a = json.loads((DATA / "vectors-A.json").read_text())
    print("\n1. pick order: top-k kernel vs SPEC §2.6 rule (share of rows equal)")
    header = ["hidden", "k", "batch", "same order", "same set"]
    print(table(header, pick_order_rows(vectors_a, args.device)))
    print("\n2. artifacts vs the vector files (L2; 64 nonces)")
    rows = [
        artifact_row(name, getattr(torch, dtype), args.device, args.batch)
        for name in args.models.split(",")
        for dtype in args.dtypes.split(",")
    ]
    header = [
        "model",
        "dtype",
        "answered",
        "max vs fp32",
        "mean",
        ">0.02/0.2/0.4",
        "max vs same-dtype file",
        "file bf16 noise max",
        "s",
    ]
    print(table(header, rows))
    worst = max(float(r[3]) for r in rows if r[1] == "float32") if rows else 0.0
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
