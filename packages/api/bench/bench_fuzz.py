"""The long schema fuzz of a real MLNode's REST API (the integration tier runs a short one).

Every operation of the OpenAPI document, valid and schema-breaking cases, `--examples` per
operation and mode, against one node with a fake inference engine. Prints cases by status, any
5xx, the node's peak memory against its idle value, and the time taken.
Usage: python bench/bench_fuzz.py [--examples N] [--seed S]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mlnode.common.testing.node_process import MLNodeProcess
from mlnode.common.testing.pressure import tree_rss
from mlnode.common.testing.schema_fuzz import fuzz_rest_api
from mlnode.infer.testing.support import FAKE_ENGINE

ENV = {
    "MLNODE_INFER_ENGINE_MODULE": FAKE_ENGINE,
    "MLNODE_INFER_GPUS": "[]",
    "MLNODE_INFER_MAX_RESTARTS": "0",
    "MLNODE_TRAIN_DEVICE": "cpu",
    "MLNODE_POW_DEVICE": "cpu",
    "MLNODE_POW_CPU_THREADS": "1",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MLNodeProcess(Path(tmp) / "node", ENV) as node:
        assert node.proc is not None
        idle = tree_rss(node.proc.pid)
        report = fuzz_rest_api(node.url, node.proc.pid, args.examples, seed=args.seed)
        alive = node.proc.poll() is None
    print(
        f"\nREST schema fuzz: {len(report.operations)} operations, {report.cases} cases "
        f"({args.examples} per operation and mode) in {report.seconds:.0f} s"
    )
    print("  by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.by_status.items())))
    print(
        f"  5xx: {len(report.server_errors)}   node alive: {alive}   "
        f"peak RSS {report.peak_rss / 2**20:.0f} MiB (idle {idle / 2**20:.0f} MiB)"
    )
    for line in report.server_errors[:20]:
        print("  ", line)
    if report.server_errors or not alive:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
