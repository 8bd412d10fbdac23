"""A real HTTP receiver for the callbacks an MLNode posts (PoW batches to `{url}/generated` ...).

Serves in a thread for tests (`CallbackReceiver`) or as a process for the local compose network
(`python -m mlnode.common.testing.callback_receiver --host 0.0.0.0 --port 9900`).
Every POST is recorded; `GET /received[?path=/generated]` lists them, `DELETE /received` clears.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
#: Below Linux's ephemeral range: a client retrying a down receiver on an ephemeral port can
#: connect to itself (TCP simultaneous open) and keep the port, so the receiver could not return.
STABLE_PORTS = range(20_000, 32_000)


def stable_port(host: str = "127.0.0.1") -> int:
    """A free port outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(STABLE_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _normal_path(path: str) -> str:
    return "/" + path.strip("/")


class _Store:
    """Received callbacks, shared by the handler threads; waiters are woken on each one."""

    def __init__(self, journal: Path | None) -> None:
        self._changed = threading.Condition()
        self._items: list[dict[str, Any]] = []
        self._journal = journal
        #: Answer every POST with this status; >= 300 records nothing (a failing receiver).
        self.status_code = HTTPStatus.OK

    def add(self, item: dict[str, Any]) -> None:
        with self._changed:
            self._items.append(item)
            if self._journal is not None:
                with self._journal.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(item) + "\n")
            self._changed.notify_all()

    def select(self, path: str | None) -> list[dict[str, Any]]:
        with self._changed:
            return [i for i in self._items if path is None or i["path"] == path]

    def wait(
        self, path: str, predicate: Callable[[list[Any]], bool], timeout_s: float
    ) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                bodies = [i["body"] for i in self._items if i["path"] == path]
                if predicate(bodies):
                    return bodies
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{path}: got {len(bodies)} bodies")
                self._changed.wait(left)

    def clear(self) -> None:
        with self._changed:
            self._items.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            return
        store = self.server.store
        if store.status_code >= 300:
            self._reply(store.status_code, {"error": "receiver told to fail"})
            return
        path = urlsplit(self.path).path
        store.add({"path": path, "body": body, "received_at": time.time()})
        self._reply(HTTPStatus.OK, {"status": "OK"})

    def do_GET(self) -> None:  # stdlib naming
        url = urlsplit(self.path)
        if url.path == "/livez":
            self._reply(HTTPStatus.OK, {"status": "ok"})
        elif url.path == "/received":
            path = parse_qs(url.query).get("path", [None])[0]
            self._reply(HTTPStatus.OK, self.server.store.select(path))
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"})

    def do_DELETE(self) -> None:  # stdlib naming
        if urlsplit(self.path).path != "/received":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "only /received can be deleted"})
            return
        self.server.store.clear()
        self._reply(HTTPStatus.OK, {"status": "OK"})


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: _Store) -> None:
        super().__init__(address, _Handler)
        self.store = store


class CallbackReceiver:
    """The receiver in a background thread; it can stop and come back on the same port.

    `url` is the callback base to hand an MLNode. Set `status_code` to make it fail requests.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, journal: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or stable_port(host)
        self._store = _Store(journal)
        self._server: _ReceiverServer | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:24123`."""
        return f"http://{self.host}:{self.port}"

    @property
    def status_code(self) -> int:
        """Status answered to POSTs (200 records them)."""
        return int(self._store.status_code)

    @status_code.setter
    def status_code(self, code: int) -> None:
        self._store.status_code = HTTPStatus(code)

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        """Callbacks so far (`{"path", "body", "received_at"}`), optionally for one path only."""
        return self._store.select(None if path is None else _normal_path(path))

    def bodies(self, path: str) -> list[Any]:
        """Bodies that arrived on `path` ("generated" or "/generated") so far."""
        return [item["body"] for item in self.received(path)]

    def wait_for(
        self, path: str, predicate: Callable[[list[Any]], bool], timeout_s: float
    ) -> list[Any]:
        """Wait until `predicate(bodies on path)` holds; TimeoutError says what arrived."""
        return self._store.wait(_normal_path(path), predicate, timeout_s)

    def start(self) -> CallbackReceiver:
        """Serve in the background."""
        self._server = _ReceiverServer((self.host, self.port), self._store)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; connections are refused until `start()` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> CallbackReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class Tarpit:
    """A receiver that never answers: it accepts connections, reads and discards, says nothing.

    `accepted` counts the connections it took, `peak_open` the most it held at once; `url` is the
    callback base to hand a node.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = stable_port(host)
        self.accepted = 0
        self.peak_open = 0
        self._open = 0
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:24123`."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Tarpit:
        """Listen in the background."""
        listener = socket.create_server((self.host, self.port), backlog=1024)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "listener":
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    self._selector.register(conn, selectors.EVENT_READ, "conn")
                    self.accepted += 1
                    self._open += 1
                    self.peak_open = max(self.peak_open, self._open)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(sock)
                    sock.close()
                    self._open -= 1

    def stop(self) -> None:
        """Close every held connection and the listener."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def __enter__(self) -> Tarpit:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9900)
    parser.add_argument("--journal", type=Path, help="also append each callback as a JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = _ReceiverServer((args.host, args.port), _Store(args.journal))
    log.info("callback receiver on %s:%d", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
