"""Streaming fusion vs a naive load-everything fusion of 4 generated ~1 GB models.

Each implementation runs in its own subprocess so its peak RSS is its own. Usage:
    python bench_fuse.py [--workdir DIR] [--layers 8] [--sources 4] [--method linear] [--repeats 2]
Targets (issue 6): streaming peak RSS <= 25% of naive, throughput >= naive.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mlnode.fuse.executor import FusionProgress
from mlnode.fuse.io.local import LocalSafetensors
from mlnode.fuse.io.writer import ShardedWriter
from mlnode.fuse.job import prepare, run
from mlnode.fuse.methods.base import MergeInputs
from mlnode.fuse.methods.registry import get_method
from mlnode.fuse.methods.validate import resolve
from mlnode.fuse.schemas import FuseRequest

HIDDEN, INTERMEDIATE, VOCAB = 2048, 5632, 32000
DTYPE = torch.bfloat16


def model_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """A Llama-shaped model: about 1.09 GB in bf16 with 8 layers."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            shapes[f"{p}self_attn.{proj}_proj.weight"] = (HIDDEN, HIDDEN)
        shapes[f"{p}mlp.gate_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[f"{p}mlp.up_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[f"{p}mlp.down_proj.weight"] = (HIDDEN, INTERMEDIATE)
        shapes[f"{p}input_layernorm.weight"] = (HIDDEN,)
        shapes[f"{p}post_attention_layernorm.weight"] = (HIDDEN,)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return shapes


def generate(directory: Path, seed: int, layers: int) -> None:
    """One source, written tensor by tensor (2 shards) so generating stays small too."""
    shapes = model_shapes(layers)
    specs = [(name, DTYPE, shape) for name, shape in shapes.items()]
    writer = ShardedWriter(directory, specs, max_shard_size=600 * 10**6)
    generator = torch.Generator().manual_seed(seed)
    for name, shape in shapes.items():
        writer.write(name, (torch.randn(shape, generator=generator) * 0.02).to(DTYPE))
    writer.commit()


def request(sources: list[Path], method: str, output: Path) -> FuseRequest:
    """The fusion both implementations perform."""
    params = {"density": 0.5} if method in ("ties", "dare_ties", "dare_linear") else {}
    return FuseRequest.model_validate(
        {
            "task_id": "bench",
            "method": method,
            "params": params,
            "base": {"path": str(sources[0])} if params else None,
            "sources": [{"path": str(s), "weight": float(i + 1)} for i, s in enumerate(sources)],
            "output": {"path": str(output), "dtype": "bfloat16"},
        }
    )


def fuse_streaming(req: FuseRequest) -> None:
    """mlnode.fuse: tensor by tensor."""
    run(prepare(req, None), FusionProgress(), threading.Event())


def fuse_naive(req: FuseRequest) -> None:
    """Load every model whole, merge each tensor with the same method, save the whole result."""
    method = get_method(req.method)
    resolved = resolve(method, req.params, [s.weight for s in req.sources], req.base is not None)
    models = [load_checkpoint(Path(s.path or "")) for s in req.sources]
    base = load_checkpoint(Path(req.base.path or "")) if req.base else None
    out = {}
    for name in models[0]:
        tensors = [m[name].float() for m in models]
        b = base[name].float() if base is not None else None
        inputs = MergeInputs(tensors, b, resolved.params, resolved.tensor_params, name=name)
        merged = method.merge(inputs)
        out[name] = merged.to(torch.bfloat16)
    Path(req.output.path).mkdir()
    save_file(out, str(Path(req.output.path) / "model.safetensors"))


def load_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    """Every shard of a checkpoint, loaded whole into one dict."""
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def proc_status(field: str) -> int:
    """A memory figure of this process in bytes.

    VmHWM is this process image's own peak (ru_maxrss would carry the parent's over exec).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(impl: str, workdir: Path, sources: int, method: str) -> None:
    """Run one implementation and print its time and peak RSS as JSON."""
    paths = [workdir / f"src{i}" for i in range(sources)]
    output = workdir / f"out-{impl}"
    req = request(paths, method, output)
    rss_before = proc_status("VmRSS")
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    (fuse_streaming if impl == "streaming" else fuse_naive)(req)
    seconds = time.perf_counter() - start
    stats = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - cpu_before,
        "peak_rss": proc_status("VmHWM"),
        "rss_after_imports": rss_before,
    }
    print(json.dumps(stats))


def cpu_seconds() -> float:
    """User and system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_of(repeats: int, workdir: Path, sources: int, method: str) -> dict[str, dict[str, float]]:
    """Each implementation `repeats` times, interleaved; the fastest run of each counts.

    Both write the same output path names, so earlier outputs are removed before each run.
    """
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for impl in ("naive", "streaming"):
            shutil.rmtree(workdir / f"out-{impl}", ignore_errors=True)
            stats = measure(impl, workdir, sources, method)
            if impl not in best or stats["seconds"] < best[impl]["seconds"]:
                best[impl] = stats
    return best


def measure(impl: str, workdir: Path, sources: int, method: str) -> dict[str, float]:
    """One implementation in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--child", impl, "--workdir", str(workdir)]
    cmd += ["--sources", str(sources), "--method", method]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    stats: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return stats


def same_output(workdir: Path) -> bool:
    """Both implementations wrote the same tensors (compared one at a time)."""
    a, b = LocalSafetensors(workdir / "out-streaming"), LocalSafetensors(workdir / "out-naive")
    return a.describe().keys() == b.describe().keys() and all(
        torch.equal(a.get(n), b.get(n)) for n in a.describe()
    )


def warm(workdir: Path) -> None:
    """Read every input once so neither implementation pays for a cold page cache."""
    for file in sorted(workdir.glob("src*/*.safetensors")):
        with file.open("rb") as f:
            while f.read(64 << 20):
                pass


def main() -> None:
    """Generate, measure each implementation, print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--method", default="linear")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["streaming", "naive"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, args.sources, args.method)
        return
    workdir = Path(tempfile.mkdtemp(prefix="fuse-bench-", dir=args.workdir))
    try:
        report(workdir, args.layers, args.sources, args.method, args.repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(workdir: Path, layers: int, sources: int, method: str, repeats: int) -> None:
    """The bench proper, in a scratch directory."""
    t0 = time.perf_counter()
    for i in range(sources):
        generate(workdir / f"src{i}", seed=i, layers=layers)
    model_bytes = sum(f.stat().st_size for f in (workdir / "src0").glob("*.safetensors"))
    print(f"generated {sources} x {model_bytes / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")
    warm(workdir)
    stats = best_of(repeats, workdir, sources, method)
    read = sources * model_bytes
    for impl, s in stats.items():
        print(
            f"{impl:>9}: {s['seconds']:6.2f} s  {read / s['seconds'] / 1e9:5.2f} GB/s read  "
            f"CPU {s['cpu_seconds']:6.2f} s  "
            f"peak RSS {s['peak_rss'] / 1e9:5.2f} GB "
            f"(after imports {s['rss_after_imports'] / 1e9:.2f})"
        )
    rss = stats["streaming"]["peak_rss"] / stats["naive"]["peak_rss"]
    speed = stats["naive"]["seconds"] / stats["streaming"]["seconds"]
    cpu = stats["naive"]["cpu_seconds"] / stats["streaming"]["cpu_seconds"]
    print(
        f"streaming/naive: peak RSS {rss:.1%} (target <= 25%), throughput x{speed:.2f} (>= 1), "
        f"CPU work x{cpu:.2f} less"
    )
    print(f"outputs identical: {same_output(workdir)}")


if __name__ == "__main__":
    main()
