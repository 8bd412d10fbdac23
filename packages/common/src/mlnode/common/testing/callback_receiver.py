"""A real HTTP receiver for the callbacks an MLNode posts (PoW batches to `{url}/generated` ...).

Serves in a thread for tests (`CallbackReceiver`) or as a process for the local compose network
(`python -m mlnode.common.testing.callback_receiver --host 0.0.0.0 --port 9900`).
Every POST is recorded; `GET /received[?path=/generated]` lists them, `DELETE /received` clears.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024


class _Store:
    """Received callbacks, shared by the handler threads."""

    def __init__(self, journal: Path | None) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        self._journal = journal

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)
            if self._journal is not None:
                with self._journal.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(item) + "\n")

    def list(self, path: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return [i for i in self._items if path is None or i["path"] == path]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
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
        path = urlsplit(self.path).path
        self.server.store.add({"path": path, "body": body, "received_at": time.time()})
        self._reply(HTTPStatus.OK, {"status": "OK"})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urlsplit(self.path)
        if url.path == "/livez":
            self._reply(HTTPStatus.OK, {"status": "ok"})
        elif url.path == "/received":
            path = parse_qs(url.query).get("path", [None])[0]
            self._reply(HTTPStatus.OK, self.server.store.list(path))
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"})

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
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
    """The receiver in a background thread; `url` is the callback base to hand an MLNode."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, journal: Path | None = None):
        self._server = _ReceiverServer((host, port), _Store(journal))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:40123`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        """Callbacks so far (`{"path", "body", "received_at"}`), optionally for one path only."""
        return self._server.store.list(path)

    def start(self) -> CallbackReceiver:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CallbackReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
