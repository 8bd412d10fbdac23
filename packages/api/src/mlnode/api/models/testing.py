"""A local Hugging Face hub for tests: the endpoints `snapshot_download` calls, on 127.0.0.1.

`GET /api/models/{repo}/revision/{rev}` (repo info), `GET /api/models/{repo}/tree/{rev}` (file
list) and `HEAD`/`GET /{repo}/resolve/{rev}/{path}` (file metadata and bytes, `Range` honoured).
Point huggingface_hub at it with `HF_ENDPOINT`. A file can be held half-sent until a gate opens
(a download in progress) or refused (a download that fails part-way).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_API = re.compile(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/?]+)")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def git_blob_id(data: bytes) -> str:
    """The git object id the hub reports as a file's `oid` and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class HubRepo:
    """One repo at one commit (also its `main`)."""

    files: dict[str, bytes]
    commit: str = ""
    #: Paths sent only half until `gate` is set; paths answered 404 (the download fails).
    held: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1(usedforsecurity=False)
            for name in sorted(self.files):
                digest.update(name.encode() + b"\0" + self.files[name])
            self.commit = digest.hexdigest()


def repo_from_dir(folder: Path) -> HubRepo:
    """A repo holding every file under `folder` (e.g. a tiny model made by a fixture)."""
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    return HubRepo(files)


class LocalHub:
    """The hub server, in a thread; a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.gate = threading.Event()
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                return

            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The value for `HF_ENDPOINT`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _find(self, repo_id: str, revision: str) -> HubRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None or revision not in ("main", repo.commit):
            return None
        return repo

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        api = _API.fullmatch(path)
        if api is not None:
            repo = self._find(api.group(1), api.group(3))
            if repo is None:
                _send(handler, 404, b'{"error":"not found"}', {"X-Error-Code": "RepoNotFound"})
            elif api.group(2) == "revision":
                info = {
                    "id": api.group(1),
                    "sha": repo.commit,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                }
                _send(handler, 200, json.dumps(info).encode(), {}, body)
            else:
                tree = [
                    {"type": "file", "path": n, "size": len(d), "oid": git_blob_id(d)}
                    for n, d in sorted(repo.files.items())
                ]
                _send(handler, 200, json.dumps(tree).encode(), {}, body)
            return
        resolve = _RESOLVE.fullmatch(path)
        repo = self._find(resolve.group(1), resolve.group(2)) if resolve else None
        name = resolve.group(3) if resolve else ""
        if repo is None or name not in repo.files or name in repo.refused:
            _send(handler, 404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)
            return
        self._file(handler, repo, name, body)

    def _file(self, handler: BaseHTTPRequestHandler, repo: HubRepo, name: str, body: bool) -> None:
        data = repo.files[name]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        if match is not None:
            start = min(int(match.group(1)), len(data))
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_id(data)}"'}
        part = data[start:]
        if not body or name not in repo.held or self.gate.is_set():
            _send(handler, 206 if start else 200, part, headers, body)
            return
        handler.send_response(206 if start else 200)
        for key, value in {**headers, "Content-Length": str(len(part))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        half = len(part) // 2
        try:
            handler.wfile.write(part[:half])
            handler.wfile.flush()
            self.gate.wait(120)
            handler.wfile.write(part[half:])
        except OSError:
            return

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    headers: dict[str, str],
    body: bool = True,
) -> None:
    handler.send_response(status)
    handler.send_header(
        "Content-Type", "application/json" if data[:1] in b"[{" else "application/octet-stream"
    )
    for key, value in {**headers, "Content-Length": str(len(data))}.items():
        handler.send_header(key, value)
    handler.end_headers()
    if body:
        handler.wfile.write(data)
