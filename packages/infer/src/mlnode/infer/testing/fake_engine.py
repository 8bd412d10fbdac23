"""A small OpenAI-compatible server that stands in for vLLM in tests and benchmarks.

It takes vLLM's command line (`--model`, `--host`, `--port`, ... ; unknown flags are ignored)
plus flags that script failures: `--fail-at-start`, `--start-delay`, `--crash-after-chunks`,
`--chunks`, `--chunk-delay`. `POST /control/health` with `{"ok": false}` makes `/health` fail
(health flaps), `POST /control/hang` with `{"hang": true}` stops its scheduler (requests wait,
`/metrics`' vLLM iteration counter stops, `/health` still answers 200), `GET /control/stats`
counts requests and streams cut by their client, and a
request body may carry `"hold_s"` to keep the request in flight that long, or `"die_mid_body"`
to exit after part of a JSON answer. Like vLLM with `return_tokens_as_token_ids`, answers asking for
logprobs name tokens `token_id:N` (the forced ids of `vllm_xargs`, else 7, 8, 9); `/tokenize`
gives each word its length as id; the forcing plugin's probe is answered as the plugin does when
`--logits-processors` names it. JSON answers echo the request body they got under `received`.
It also serves `/detokenize`, `/version`, `/metrics` (vLLM's progress figures) and the routes of
the project's endpoint plugins (the PoC v2 routes `/api/v1/pow/*`), loaded by `plugin_host` as
vLLM loads them, over a stand-in worker (`--poc-batch-delay` s per worker call). The plugins
read their settings from the environment, as in a real engine (e.g. `MLNODE_POC_*`).
Run it with `python -m mlnode.infer.testing.fake_engine --model m --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import uvicorn

from mlnode.infer.forcing.protocol import (
    FORCED_IDS_XARG,
    PROBE_XARG,
    PROCESSOR_FQCN,
    probe_message,
)
from mlnode.infer.testing.plugin_host import FakeEngineClient, PluginHost

Scope = dict[str, Any]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The vLLM flags that matter here, and the fault flags."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fail-at-start", action="store_true", help="exit 1 before serving")
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds before serving")
    parser.add_argument("--crash-after-chunks", type=int, default=None, help="die mid-stream")
    parser.add_argument("--chunks", type=int, default=5, help="chunks of a streamed answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--logits-processors", nargs="+", default=[])
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--worker-extension-cls", default="")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--poc-batch-delay", type=float, default=0.05, help="s per worker RPC")
    args, _ = parser.parse_known_args(argv)
    return args


class FakeEngine:
    """The ASGI app."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.healthy = True
        self.requests = 0
        self.cancelled = 0
        self.in_flight = 0
        self.waiting = 0
        self.iterations = 0
        self.stepping = asyncio.Event()
        self.stepping.set()
        client = FakeEngineClient(args, lambda: self.in_flight, args.poc_batch_delay)
        self.plugins = PluginHost(args, client)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Serve one request."""
        if scope["type"] == "lifespan":
            await self.plugins.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if self.plugins.serves(scope):
            await self.plugins.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path, method = scope["path"], scope["method"]
        if path == "/health":
            await _json(send, 200 if self.healthy else 503, {})
        elif path == "/control/hang":
            hang = bool(json.loads(body)["hang"])
            self.stepping.clear() if hang else self.stepping.set()
            await _json(send, 200, {"hang": hang})
        elif path == "/metrics":
            await _text(send, self._metrics())
        elif path == "/detokenize" and method == "POST":
            tokens = json.loads(body or b"{}").get("tokens", [])
            await _json(send, 200, {"prompt": " ".join(f"w{t}" for t in tokens)})
        elif path == "/version":
            await _json(send, 200, {"version": "0.32.0+fake"})
        elif path == "/control/health":
            self.healthy = bool(json.loads(body)["ok"])
            await _json(send, 200, {"ok": self.healthy})
        elif path == "/control/stats":
            stats: dict[str, Any] = {"requests": self.requests, "cancelled": self.cancelled}
            stats["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            await _json(send, 200, {**stats, "in_flight": self.in_flight})
        elif path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": self.args.model}]})
        elif path == "/v1/echo":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            query = scope["query_string"].decode()
            echo = {"method": method, "path": path, "query": query, "headers": headers}
            await _json(send, 200, {**echo, "body": body.decode(), "port": self.args.port})
        elif path == "/tokenize" and method == "POST":
            words = str(json.loads(body).get("prompt", "")).split()
            await _json(send, 200, {"tokens": [len(w) for w in words], "count": len(words)})
        elif path in ("/v1/completions", "/v1/chat/completions") and method == "POST":
            request = json.loads(body or b"{}")
            names = sorted(k.decode() for k, _ in scope["headers"])
            await self._complete(request, receive, send, names)
        else:
            await _json(send, 404, {"error": {"message": f"no route {path}"}})

    def _metrics(self) -> str:
        labels = f'{{engine="0",model_name="{self.args.model}"}}'
        running = self.in_flight - self.waiting
        return (
            f"vllm:num_requests_running{labels} {float(running)}\n"
            f"vllm:num_requests_waiting{labels} {float(self.waiting)}\n"
            f"vllm:iteration_tokens_total_count{labels} {float(self.iterations)}\n"
        )

    async def _step(self) -> None:
        """One scheduler step; a hung engine (/control/hang) never gets past the wait."""
        if not self.stepping.is_set():
            self.waiting += 1
            try:
                await self.stepping.wait()
            finally:
                self.waiting -= 1
        self.iterations += 1

    async def _complete(
        self, request: dict[str, Any], receive: Any, send: Any, headers: list[str]
    ) -> None:
        xargs = request.get("vllm_xargs") or {}
        if PROBE_XARG in xargs and PROCESSOR_FQCN in self.args.logits_processors:
            error = {"message": probe_message(True, ""), "type": "BadRequestError", "code": 400}
            await _json(send, 400, {"error": error})
            return
        self.requests += 1
        self.in_flight += 1
        try:
            await self._step()
            if request.get("hold_s"):
                deadline = time.monotonic() + float(request["hold_s"])
                while time.monotonic() < deadline:
                    await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
                    await self._step()
            if request.get("die_mid_body"):
                await _die_mid_body(send)
            ids = _logprob_ids(request)
            if request.get("stream"):
                await self._stream(receive, send, ids)
            else:
                answer = {"object": "text_completion", "model": self.args.model}
                choice: dict[str, Any] = {"index": 0, "text": "ok", "finish_reason": "stop"}
                if ids:
                    choice["logprobs"] = {"content": [_entry(t) for t in ids]}
                answer.update(port=self.args.port, choices=[choice], received=request)
                answer["received_headers"] = headers
                await _json(send, 200, answer)
        finally:
            self.in_flight -= 1

    async def _stream(self, receive: Any, send: Any, ids: list[int]) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        disconnected = asyncio.ensure_future(receive())
        try:
            for i in range(self.args.chunks):
                if self.args.crash_after_chunks is not None and i >= self.args.crash_after_chunks:
                    os._exit(3)
                choice: dict[str, Any] = {"index": 0, "text": f"t{i} "}
                if ids:
                    choice["logprobs"] = {"content": [_entry(ids[i % len(ids)])]}
                chunk = {"choices": [choice], "port": self.args.port}
                event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if self.args.chunk_delay:
                    await asyncio.wait([disconnected], timeout=self.args.chunk_delay)
                if disconnected.done():
                    self.cancelled += 1
                    return
            done = b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": done, "more_body": False})
        finally:
            disconnected.cancel()


def _logprob_ids(request: dict[str, Any]) -> list[int]:
    if not (request.get("logprobs") and request.get("return_tokens_as_token_ids")):
        return []
    forced = (request.get("vllm_xargs") or {}).get(FORCED_IDS_XARG)
    return list(forced) if forced else [7, 8, 9]


def _entry(token: int) -> dict[str, Any]:
    """A chat logprobs entry as vLLM spells it with `return_tokens_as_token_ids`."""
    name = f"token_id:{token}"
    tops = [(name, -1.5), ("token_id:1", -2.0)]
    return {
        "token": name,
        "logprob": -1.5,
        "bytes": list(f"w{token}".encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops],
    }


async def _die_mid_body(send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"partial": ', "more_body": True})
    await asyncio.sleep(0.2)
    os._exit(3)


async def _text(send: Any, text: str) -> None:
    payload = text.encode()
    headers = [
        (b"content-type", b"text/plain; version=0.0.4"),
        (b"content-length", b"%d" % len(payload)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _json(send: Any, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def main(argv: list[str]) -> None:
    """Serve until SIGTERM."""
    args = parse_args(argv)
    sys.stdout.write(f"fake engine for {args.model} starting on port {args.port}\n")
    sys.stdout.flush()
    if args.start_delay:
        time.sleep(args.start_delay)
    if args.fail_at_start:
        sys.stderr.write("ValueError: fake engine told to fail at start-up\n")
        sys.exit(1)
    uvicorn.run(
        FakeEngine(args), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main(sys.argv[1:])
