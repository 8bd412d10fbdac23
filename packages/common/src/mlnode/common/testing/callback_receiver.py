"""A small real HTTP server that records the JSON callbacks an MLNode posts (for tests)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

#: Below Linux's ephemeral range: a client retrying a down receiver on an ephemeral port can
#: connect to itself (TCP simultaneous open) and keep the port, so the receiver could not return.
STABLE_PORTS = range(20_000, 32_000)


def stable_port() -> int:
    """A free loopback port outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(STABLE_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class CallbackReceiver:
    """Records `POST /<path>` JSON bodies; can go down and come back on the same port."""

    def __init__(self, port: int | None = None) -> None:
        """Pick a port; `start()` begins serving."""
        self.port = port or stable_port()
        self.received: dict[str, list[Any]] = {}
        self.status_code = 200
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to hand to the MLNode."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CallbackReceiver:
        """Serve in a background thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                code = receiver.status_code
                if code < 300:
                    receiver._record(self.path.strip("/"), body)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; connections are refused until `start()` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, path: str, body: Any) -> None:
        with self._lock:
            self.received.setdefault(path, []).append(body)
            self._lock.notify_all()

    def bodies(self, path: str) -> list[Any]:
        """Copies of what arrived on `path` so far."""
        with self._lock:
            return list(self.received.get(path, []))

    def wait_for(
        self, path: str, predicate: Callable[[list[Any]], bool], timeout_s: float
    ) -> list[Any]:
        """Wait until `predicate(bodies)` holds; raise TimeoutError with what arrived."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(self.received.get(path, [])):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{path}: got {len(self.received.get(path, []))} bodies")
                self._lock.wait(left)
            return list(self.received[path])

    def __enter__(self) -> CallbackReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
