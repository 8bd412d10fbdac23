"""A real MLNode under attack on its REST API: huge bodies, huge models, leaked secrets, a fuzz.

One node serves the whole module (the fuzz runs last). Each attack must be refused or bounded
while honest REST calls keep succeeding, with the node's memory (process and children) within
`RSS_BOUND` of what it held before.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlnode.common.testing import MLNodeProcess, WaitTimeout, wait_until
from mlnode.common.testing.node_process import free_port
from mlnode.common.testing.pressure import AttackWatch, tree_rss
from mlnode.common.testing.schema_fuzz import fuzz_rest_api
from mlnode.infer.testing.support import FAKE_ENGINE
from mlnode.pow.testing import TINY_V1_PARAMS

MAX_BODY = 8 << 20
HEADER_TIMEOUT_S = 2.0
SLOW_CLIENTS = 200
#: Growth of the node's resident memory any attack here may cause.
RSS_BOUND = 256 << 20
#: The fuzz runs many routes (PoW builds a model, training may start): a wider bound.
FUZZ_RSS_BOUND = 1 << 30
PASSWORD = "hunter2-callback-pw"
TOKEN = "node-api-token-not-for-engines"
NODE_ENV = {
    "MLNODE_MAX_BODY_BYTES": str(MAX_BODY),
    "MLNODE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "MLNODE_API_TOKEN": TOKEN,
    "MLNODE_INFER_ENGINE_MODULE": FAKE_ENGINE,
    "MLNODE_INFER_GPUS": "[]",
    "MLNODE_INFER_MAX_RESTARTS": "0",
    "MLNODE_TRAIN_DEVICE": "cpu",
    "MLNODE_TRAIN_MAX_MEMORY_BYTES": str(4 << 30),
    "MLNODE_POW_DEVICE": "cpu",
    "MLNODE_POW_CPU_THREADS": "1",
    "MLNODE_POW_CALLBACK_BACKOFF_INITIAL_S": "0.05",
    "MLNODE_POW_CALLBACK_BACKOFF_MAX_S": "0.1",
}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLNodeProcess]:
    with MLNodeProcess(tmp_path_factory.mktemp("rest") / "node", NODE_ENV) as started:
        yield started


def api(node: MLNodeProcess) -> httpx.Client:
    return httpx.Client(base_url=f"{node.url}/api/v1", headers=AUTH, timeout=60)


def rss(node: MLNodeProcess) -> int:
    assert node.proc is not None
    return tree_rss(node.proc.pid)


class HonestCalls:
    """GET /api/v1/state in a loop beside an attack; every answer must be 200."""

    def __init__(self, node: MLNodeProcess) -> None:
        self.node = node
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with api(self.node) as client:
            while not self._stop.is_set():
                try:
                    status = client.get("/state").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(str(status))
                time.sleep(0.02)

    def _wait_for_more(self) -> None:
        seen = self.ok
        with contextlib.suppress(WaitTimeout):  # judged just below, with the failures
            wait_until(lambda: self.ok > seen or self.failures, timeout_s=30, interval_s=0.01)
        assert self.ok > seen, f"no honest call succeeded: {self.failures[:5]}"

    def __enter__(self) -> HonestCalls:
        self._thread.start()
        self._wait_for_more()
        return self

    def __exit__(self, *_: object) -> None:
        self._wait_for_more()
        self._stop.set()
        self._thread.join(30)
        assert not self.failures, self.failures[:5]


def raw_post(node: MLNodeProcess, path: str, head_extra: bytes, body: bytes) -> bytes:
    """Send a POST with a hand-made head, then up to `body`; what came back before the close."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(
            b"POST %b HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %b\r\n%b\r\n"
            % (path.encode(), TOKEN.encode(), head_extra)
        )
        try:
            for start in range(0, len(body), 1 << 16):
                sock.sendall(body[start : start + (1 << 16)])
        except OSError:
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def test_declared_huge_body_is_413_unread(node: MLNodeProcess) -> None:
    before = rss(node)
    with HonestCalls(node):
        answer = raw_post(
            node, "/api/v1/peers", b"content-length: %d\r\n" % (2 << 30), b"x" * (8 << 20)
        )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"MLNODE_MAX_BODY_BYTES" in answer
    assert rss(node) - before < RSS_BOUND


def test_chunked_body_past_the_limit_is_413(node: MLNodeProcess) -> None:
    before = rss(node)
    chunk = b"%x\r\n%b\r\n" % (1 << 16, b"[" * (1 << 16))
    with HonestCalls(node):
        answer = raw_post(node, "/api/v1/peers", b"transfer-encoding: chunked\r\n", chunk * 256)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rss(node) - before < RSS_BOUND


def read_all(sock: socket.socket) -> bytes:
    """What the node sent before closing; `<timeout>` when it kept the connection open."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except TimeoutError:
        return answer + b"<timeout>"
    except OSError:
        pass
    return answer


def test_huge_and_numerous_headers_are_431(node: MLNodeProcess) -> None:
    before = rss(node)
    with HonestCalls(node), socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(b"GET /api/v1/state HTTP/1.1\r\nhost: x\r\nx-huge: ")
        sent = 0
        try:
            while sent < 128 << 20:
                sock.sendall(b"a" * (1 << 20))
                sent += 1 << 20
        except OSError:
            pass
        answer = read_all(sock)
    assert sent < 8 << 20, f"the node read {sent >> 20} MiB of one header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        lines = b"".join(b"x-%d: v\r\n" % i for i in range(101))
        sock.sendall(b"GET /api/v1/state HTTP/1.1\r\nhost: x\r\n" + lines + b"\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"MLNODE_MAX_HEADERS" in answer
    assert rss(node) - before < RSS_BOUND


def test_half_sent_and_silent_connections_are_closed(node: MLNodeProcess) -> None:
    slow = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(SLOW_CLIENTS)]
    silent = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(SLOW_CLIENTS)]
    with HonestCalls(node):
        for sock in slow:
            sock.sendall(b"POST /api/v1/stop HTTP/1.1\r\nhost: x\r\n")
        for sock in slow + silent:
            sock.settimeout(HEADER_TIMEOUT_S * 10)
        slow_answers = [read_all(sock) for sock in slow]
        silent_answers = [read_all(sock) for sock in silent]
    for sock in slow + silent:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in slow_answers), {a[:30] for a in slow_answers}
    assert all(a == b"" for a in silent_answers)


def test_body_within_the_limit_is_still_served(node: MLNodeProcess) -> None:
    with api(node) as client:
        answer = client.put("/peers", content=json.dumps({"peers": {}}).encode())
    assert answer.status_code in (200, 422), answer.text


#: `/livez` (REST; the event loop it runs on serves the inference port too) during an attack.
LIVEZ_P99_S = 0.25


def test_amplified_validation_errors_are_capped(node: MLNodeProcess) -> None:
    """4 MiB of `{"peers": [0, 0, ...]}` once took 26 s, 279 MiB of answer and +2.9 GiB."""
    body = b'{"peers": [' + b"0," * (2 << 20) + b"0]}"
    assert node.proc is not None
    before = rss(node)
    answers: list[tuple[int, int, float]] = []

    def attack() -> None:
        with api(node) as client:
            began = time.perf_counter()
            answer = client.put("/peers", content=body)
            answers.append((answer.status_code, len(answer.content), time.perf_counter() - began))

    with HonestCalls(node), AttackWatch(node.url, [node.proc.pid], interval_s=0.02) as watch:
        for _ in range(2):
            attackers = [threading.Thread(target=attack) for _ in range(4)]
            for thread in attackers:
                thread.start()
            for thread in attackers:
                thread.join(60)
    assert len(answers) == 8
    assert all(status == 422 and size < 2048 and took < 10 for status, size, took in answers), (
        answers
    )
    assert not watch.failures, watch.failures[:5]
    assert watch.livez_p99_s() < LIVEZ_P99_S, watch.livez_p99_s()
    assert watch.peak_rss_bytes() - before < RSS_BOUND, (
        f"+{(watch.peak_rss_bytes() - before) >> 20} MiB"
    )


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "model.config."),
        (
            {"num_hidden_layers": 10_000_000, "hidden_size": 8, "num_attention_heads": 2},
            "model.config.",
        ),
        ({"vocab_size": 2_000_000_000, "hidden_size": 64}, "model.config."),
        ({"hidden_size": "wide"}, "model.config.hidden_size"),
    ],
)
def test_train_start_refuses_models_beyond_memory(
    node: MLNodeProcess, tmp_path: Path, config: dict[str, Any], field: str
) -> None:
    data = tmp_path / "corpus.txt"
    data.write_text("some words " * 50)
    body = {"task_id": "big", "model": {"config": config}, "dataset": {"path": str(data)}}
    before = rss(node)
    with HonestCalls(node), api(node) as client:
        answer = client.post("/train/start", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["param"].startswith(field)
        assert client.get("/state").json()["state"] == "STOPPED"
    assert rss(node) - before < RSS_BOUND


def test_deep_and_malformed_train_bodies_are_refused_quickly(
    node: MLNodeProcess, tmp_path: Path
) -> None:
    """60,000 layers of hidden size 8 fit the memory estimate but took 90 s to build."""
    data = tmp_path / "corpus.txt"
    data.write_text("some words " * 50)
    deep = {"num_hidden_layers": 60_000, "hidden_size": 8, "num_attention_heads": 2}
    body = {"task_id": "deep", "model": {"config": deep}, "dataset": {"path": str(data)}}
    assert node.proc is not None
    before = rss(node)
    with HonestCalls(node), api(node) as client:
        with AttackWatch(node.url, [node.proc.pid], interval_s=0.02) as watch:
            began = time.perf_counter()
            answer = client.post("/train/start", json=body)
            took = time.perf_counter() - began
            legacy = client.post(
                "/train/start", json={"train_config": {"optim": 5}, "train_env": {}}
            )
        assert client.get("/state").json()["state"] == "STOPPED"
    assert answer.status_code == 422 and took < 10, (answer.status_code, took)
    assert answer.json()["error"]["param"] == "model.config.num_hidden_layers"
    assert legacy.status_code == 422, legacy.text
    assert watch.livez_p99_s() < LIVEZ_P99_S, watch.livez_p99_s()
    assert watch.peak_rss_bytes() - before < RSS_BOUND


def test_train_start_refuses_a_device_as_dataset(node: MLNodeProcess) -> None:
    body = {
        "task_id": "z",
        "model": {"config": {"hidden_size": 8}},
        "dataset": {"path": "/dev/zero"},
    }
    with api(node) as client:
        answer = client.post("/train/start", json=body)
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "dataset.path"


def test_callback_password_stays_out_of_logs_and_status(node: MLNodeProcess) -> None:
    url = f"http://mlnode:{PASSWORD}@127.0.0.1:{free_port()}/cb"
    body = {
        "block_hash": "h",
        "block_height": 1,
        "public_key": "k",
        "batch_size": 16,
        "r_target": 10.0,
        "fraud_threshold": 1e-7,
        "params": TINY_V1_PARAMS,
        "node_id": 0,
        "node_count": 1,
        "url": url,
    }
    with api(node) as client:
        assert client.post("/pow/init/generate", json=body).status_code == 200
        status: dict[str, Any] = wait_until(
            lambda: client.get("/pow/status").json(),
            lambda s: bool(s.get("batches_pending")) and "POST" in (s.get("last_error") or ""),
            timeout_s=60,
            interval_s=0.2,
            what="a failed callback",
        )
        # Status and logs name the destination only: no user, password, path or query.
        destination = f"http://127.0.0.1:{httpx.URL(url).port}"
        assert f"POST {destination}: " in status["last_error"], status
        everything = json.dumps([status, client.get("/state").json()])
        assert client.post("/pow/stop").status_code == 200
    assert PASSWORD not in everything
    assert f"callback to {destination} failed" in node.log()
    assert "mlnode:" not in status["last_error"]
    assert PASSWORD not in node.log()


def test_engines_get_no_node_secrets(node: MLNodeProcess) -> None:
    up = {"model": "tiny", "dtype": "auto", "additional_args": ["--api-key", "engine-key-42"]}
    with api(node) as client:
        answer = client.post("/inference/up", json=up)
        assert answer.status_code == 200, answer.text
        status = client.get("/inference/status").json()
        instance = status["instances"][0]
        environ = Path(f"/proc/{instance['pid']}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        log_head = Path(instance["log_file"]).read_text().splitlines()[0]
        assert client.post("/inference/down").status_code == 200
    assert "MLNODE_API_TOKEN" not in names and "PATH" in names
    assert TOKEN.encode() not in b"\0".join(environ)
    assert "engine-key-42" not in log_head and "--api-key ***" in log_head
    assert "engine-key-42" not in json.dumps(status)


def test_public_bind_without_token_is_refused(tmp_path: Path) -> None:
    env = {"MLNODE_HOST": "0.0.0.0", "MLNODE_API_TOKEN": ""}
    with pytest.raises(RuntimeError) as refused:
        MLNodeProcess(tmp_path / "public", env, ready_timeout_s=30).start()
    assert "exited with 2" in str(refused.value)
    assert "MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC" in str(refused.value)


def test_schema_fuzz_finds_no_server_error(node: MLNodeProcess) -> None:
    assert node.proc is not None
    before = rss(node)
    report = fuzz_rest_api(node.url, node.proc.pid, examples_per_operation=3, headers=AUTH)
    assert len(report.operations) >= 30
    assert not report.server_errors, report.server_errors[:5]
    assert report.cases > 60
    assert report.peak_rss - before < FUZZ_RSS_BOUND
    assert httpx.get(f"{node.url}/livez", timeout=10).status_code == 200
