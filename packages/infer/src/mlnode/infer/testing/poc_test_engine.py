"""Test engine only: the in-engine PoC v2 routes (`/api/v1/pow/*`, SPEC §4.1) for tests.

The fake engine (`fake_engine`) mounts this so MLNode's fan-out can be tested against processes
that behave like a PoC-capable vLLM: the status machine (IDLE / GENERATING), the queue of
`/generate` jobs with `wait`, results kept for a while, the callbacks to `{url}/generated` and
`{url}/validated` with the engine's exact bodies, nonce assignment by group. The artifacts are NOT
a forward pass: each is a deterministic hash of (block hash, public key, nonce) turned into
`k_dim` fp16 values, so a validator recomputes the same vector and a perturbed one mismatches.
The real computation belongs to the engine plugin, never to this module.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections import deque
from typing import Any

import httpx

PREFIX = "/api/v1/pow"
MAX_QUEUED_NONCES = 100_000
RESULT_TTL_S = 300.0
CALLBACK_ATTEMPTS = 10


def artifact(block_hash: str, public_key: str, nonce: int, k_dim: int) -> str:
    """The test artifact of one nonce: `k_dim` fp16 little-endian values, base64."""
    digest = hashlib.sha256(f"{block_hash}|{public_key}|{nonce}".encode()).digest()
    values = [(digest[i % len(digest)] - 127.5) / 128.0 for i in range(k_dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return base64.b64encode(struct.pack(f"<{k_dim}e", *(v / norm for v in values))).decode()


def _decode(vector_b64: str) -> list[float] | None:
    try:
        raw = base64.b64decode(vector_b64, validate=True)
    except ValueError:
        return None
    if len(raw) % 2:
        return None
    return list(struct.unpack(f"<{len(raw) // 2}e", raw))


def binomial_p_value(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p) (one-sided, exact)."""
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


class Problem(Exception):
    """An HTTP error answer of the test engine."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _need(body: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in body]
    if missing:
        raise Problem(422, f"missing field(s): {', '.join(missing)}")


class TestEnginePoc:
    """The PoC state of one test engine process."""

    __test__ = False  # a test engine, not a pytest test class

    def __init__(self, model: str, callback_interval_s: float, batch_delay_s: float) -> None:
        self.model = model
        self.callback_interval_s = callback_interval_s
        self.batch_delay_s = batch_delay_s
        self.config: dict[str, Any] | None = None
        self.processed = 0
        self.started_at = 0.0
        self.buffer: deque[dict[str, Any]] = deque(maxlen=1_000_000)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.queued_nonces = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._mining: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Answer one `/api/v1/pow/*` request."""
        route = path[len(PREFIX) :]
        try:
            if method == "POST" and route == "/init/generate":
                return 200, self.init_generate(body)
            if method == "POST" and route == "/generate":
                return 200, await self.generate(body)
            if method == "GET" and route.startswith("/generate/"):
                return 200, self.result(route.rsplit("/", 1)[1])
            if method == "GET" and route == "/status":
                return 200, self.status()
            if method == "POST" and route == "/stop":
                return 200, await self.stop()
            if method == "GET" and route == "/versions":
                return 200, {
                    "vllm_version": "0.32.0+test-engine",
                    "gonka_poc_version": "test-engine",
                    "poc_validation_inference": True,
                }
        except Problem as problem:
            return problem.status, {"detail": problem.detail}
        return 404, {"detail": "Not Found"}

    def _check_params(self, body: dict[str, Any]) -> dict[str, Any]:
        params = body.get("params")
        if not isinstance(params, dict) or "model" not in params or "seq_len" not in params:
            raise Problem(422, "params needs model and seq_len")
        if params["model"] != self.model:
            raise Problem(409, f"params.model {params['model']!r} is not the served {self.model!r}")
        return params

    def init_generate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start mining this engine's nonce group."""
        _need(body, "block_hash", "block_height", "public_key", "node_id", "node_count", "params")
        params = self._check_params(body)
        if self._mining is not None and not self._mining.done():
            raise Problem(409, "Already generating")
        self.config = {
            **{k: body[k] for k in ("block_hash", "block_height", "public_key")},
            "node_id": int(body["node_id"]),
            "node_count": int(body["node_count"]),
            "group_id": int(body.get("group_id", 0)),
            "n_groups": int(body.get("n_groups", 1)),
            "seq_len": int(params["seq_len"]),
            "k_dim": int(params.get("k_dim", 12)),
        }
        self.processed, self.started_at = 0, time.monotonic()
        self._mining = self._spawn(self._mine(dict(self.config), int(body.get("batch_size", 32))))
        if body.get("url"):
            self._spawn(self._deliver_mined(str(body["url"]), self._mining))
        return {"status": "OK", "pow_status": {"status": "GENERATING"}}

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _mine(self, config: dict[str, Any], batch_size: int) -> None:
        stride = config["n_groups"] * config["node_count"]
        first = config["node_id"] + config["group_id"] * config["node_count"]
        x = 0
        while True:
            for _ in range(batch_size):
                nonce = first + x * stride
                vector = artifact(
                    config["block_hash"], config["public_key"], nonce, config["k_dim"]
                )
                self.buffer.append({"nonce": nonce, "vector_b64": vector})
                x += 1
            self.processed += batch_size
            await asyncio.sleep(self.batch_delay_s)

    async def _deliver_mined(self, url: str, mining: asyncio.Task[None]) -> None:
        config = dict(self.config or {})
        async with httpx.AsyncClient() as client:
            while not mining.done():
                await asyncio.sleep(self.callback_interval_s)
                if not self.buffer:
                    continue
                artifacts = list(self.buffer)
                self.buffer.clear()
                batch = {
                    **{k: config[k] for k in ("public_key", "block_hash", "block_height")},
                    "node_id": config["node_id"],
                    "artifacts": artifacts,
                    "encoding": _encoding(config["k_dim"]),
                }
                await _post(client, f"{url}/generated", batch)

    async def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue (or, with wait, run) the computation or validation of given nonces."""
        _need(body, "block_hash", "block_height", "public_key", "node_id", "nonces", "params")
        self._check_params(body)
        nonces = [int(n) for n in body["nonces"]]
        validation = body.get("validation")
        if validation is not None:
            given = {int(a["nonce"]) for a in validation.get("artifacts", [])}
            if given != set(nonces):
                raise Problem(400, "validation.artifacts nonces differ from nonces")
        request_id = str(uuid.uuid4())
        job = {"status": "queued", "request_id": request_id, "body": body, "at": time.monotonic()}
        if body.get("wait"):
            await self._mining_done()  # mining has priority over every /generate
            return {"request_id": request_id, **self._compute(body)}
        if self.queued_nonces + len(nonces) > MAX_QUEUED_NONCES:
            raise Problem(429, "too many nonces queued")
        self._expire()
        self.jobs[request_id] = job
        self.queued_nonces += len(nonces)
        self.queue.put_nowait(request_id)
        if self._worker is None or self._worker.done():
            self._worker = self._spawn(self._work())
        return {"status": "queued", "request_id": request_id, "queued_count": self.queue.qsize()}

    def _compute(self, body: dict[str, Any]) -> dict[str, Any]:
        k_dim = int(body["params"].get("k_dim", 12))
        nonces = [int(n) for n in body["nonces"]]
        computed = {n: artifact(body["block_hash"], body["public_key"], n, k_dim) for n in nonces}
        if body.get("validation") is None:
            artifacts = [{"nonce": n, "vector_b64": v} for n, v in computed.items()]
            return {"status": "completed", "artifacts": artifacts, "encoding": _encoding(k_dim)}
        stat = body.get("stat_test") or {}
        threshold = float(stat.get("dist_threshold", 0.02))
        mismatches = []
        for item in body["validation"]["artifacts"]:
            nonce, received = int(item["nonce"]), _decode(item.get("vector_b64", ""))
            mine = _decode(computed[nonce]) or []
            if received is None or len(received) != k_dim or not all(map(math.isfinite, received)):
                mismatches.append(nonce)
            elif math.dist(mine, received) > threshold:
                mismatches.append(nonce)
        p_value = binomial_p_value(
            len(mismatches), len(nonces), float(stat.get("p_mismatch", 0.001))
        )
        cutoff = float(stat.get("fraud_threshold", stat.get("p_value_threshold", 0.01)))
        return {
            "status": "completed",
            "n_total": len(nonces),
            "n_mismatch": len(mismatches),
            "mismatch_nonces": sorted(mismatches),
            "p_value": p_value,
            "fraud_detected": p_value < cutoff,
            "n_nan_steps": 0,
            "n_excluded": 0,
            "excluded_nonces": [],
            "no_verdict": None,
        }

    async def _mining_done(self) -> None:
        while self._mining is not None and not self._mining.done():
            await asyncio.sleep(self.batch_delay_s)

    async def _work(self) -> None:
        async with httpx.AsyncClient() as client:
            while not self.queue.empty():
                request_id = self.queue.get_nowait()
                job = self.jobs.get(request_id)
                if job is None:
                    continue
                await self._mining_done()
                job["status"] = "running"
                body = job["body"]
                self.queued_nonces -= len(body["nonces"])
                result = self._compute(body)
                job.update(result, at=time.monotonic())
                if body.get("url"):
                    url, payload = _queued_callback(request_id, body, result)
                    await _post(client, url, payload)

    def result(self, request_id: str) -> dict[str, Any]:
        """State or result of a queued job."""
        self._expire()
        job = self.jobs.get(request_id)
        if job is None:
            raise Problem(404, f"unknown request_id {request_id}")
        return {k: v for k, v in job.items() if k not in ("body", "at")}

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, j in self.jobs.items() if j["status"] == "completed"]:
            if now - self.jobs[key]["at"] > RESULT_TTL_S:
                del self.jobs[key]

    def status(self) -> dict[str, Any]:
        """IDLE, or GENERATING with the mining config and rate."""
        if self._mining is None or self._mining.done() or self.config is None:
            return {"status": "IDLE", "config": None, "stats": None, "non_finite_dropped": 0}
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        stats = {"total_processed": self.processed, "nonces_per_second": self.processed / elapsed}
        return {
            "status": "GENERATING",
            "config": self.config,
            "stats": stats,
            "non_finite_dropped": 0,
        }

    async def stop(self) -> dict[str, Any]:
        """Cancel mining and queued jobs, drop stored results and the callback buffer."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self._mining = self._worker = None
        self.jobs.clear()
        self.buffer.clear()
        self.queue = asyncio.Queue()
        self.queued_nonces = 0
        return {"status": "OK", "pow_status": {"status": "STOPPED"}}


def _encoding(k_dim: int) -> dict[str, Any]:
    return {"dtype": "float16", "k_dim": k_dim, "endian": "little"}


def _queued_callback(
    request_id: str, body: dict[str, Any], result: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    head = {
        "request_id": request_id,
        **{k: body[k] for k in ("block_hash", "block_height", "public_key")},
        "node_id": body["node_id"],
    }
    if "artifacts" in result:
        extra = {"artifacts": result["artifacts"], "encoding": result["encoding"]}
        return f"{body['url']}/generated", {**head, **extra}
    fields = (
        "n_total",
        "n_mismatch",
        "mismatch_nonces",
        "p_value",
        "fraud_detected",
        "n_nan_steps",
        "n_excluded",
        "excluded_nonces",
        "no_verdict",
    )
    return f"{body['url']}/validated", {**head, **{k: result[k] for k in fields}}


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    """POST with up to 10 attempts, backoff 1 s doubling to 30 s; then the batch is dropped."""
    delay = 1.0
    for _ in range(CALLBACK_ATTEMPTS):
        try:
            if (await client.post(url, json=body, timeout=10)).status_code < 400:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
