"""The models API (contract N10-N14) of a real MLNode against a local Hugging Face hub.

The hub (`mlnode.api.models.testing.LocalHub`) serves what `snapshot_download` asks for on
127.0.0.1; the node downloads into its own `HF_HUB_CACHE`. Requests are written as the network
node's Go client writes them (no Content-Type on POST, JSON with Content-Type on DELETE).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlnode.api.models.testing import HubRepo, LocalHub
from mlnode.common.testing import MLNodeProcess, wait_until
from mlnode.common.testing.go_client import GoAnswer, GoClient

#: Half of it is more than huggingface_hub's 10 MiB read chunk, so progress shows on disk.
BIG = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def hub() -> Iterator[LocalHub]:
    with LocalHub() as started:
        started.repos["org/small"] = HubRepo({"config.json": b'{"x": 1}', "w.bin": b"w" * 5000})
        zeros = bytes(BIG)
        for name in ("org/slow1", "org/slow2", "org/slow3"):
            started.repos[name] = HubRepo(
                {"config.json": name.encode(), "big.bin": zeros}, held={"big.bin"}
            )
        started.repos["org/broken"] = HubRepo(
            {"config.json": b"{}", "gone.bin": b"g" * 100}, refused={"gone.bin"}
        )
        yield started


@pytest.fixture(scope="module")
def node(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLNodeProcess]:
    root = tmp_path_factory.mktemp("models")
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "0"}
    with MLNodeProcess(root / "node", env) as started:
        yield started


def body(repo: str, commit: str | None = None) -> bytes:
    return json.dumps({"hf_repo": repo, "hf_commit": commit}, separators=(",", ":")).encode()


def ok(answer: GoAnswer, status: int = 200) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body)
    parsed = answer.json()
    assert isinstance(parsed, dict)
    return parsed


def status(rest: GoClient, repo: str, commit: str | None = None) -> dict[str, Any]:
    return ok(rest.post("/api/v1/models/status", body(repo, commit)))


def delete(rest: GoClient, repo: str, commit: str | None = None) -> dict[str, Any]:
    return ok(rest.send("DELETE", "/api/v1/models", body(repo, commit), "application/json"))


def test_download_status_list_space(node: MLNodeProcess, hub: LocalHub) -> None:
    rest = GoClient(node.port, prefix="/v3.1.0-vllm-0.28.0")
    cache = Path(node.env["HF_HUB_CACHE"])
    space = ok(rest.get("/api/v1/models/space"))
    assert space["cache_path"] == str(cache.resolve()) and space["available_gb"] > 0
    assert status(rest, "org/small")["status"] == "NOT_FOUND"

    started = ok(rest.post("/api/v1/models/download", body("org/small")), 202)
    assert started["status"] == "DOWNLOADING" and started["task_id"]
    assert started["model"] == {"hf_repo": "org/small", "hf_commit": None}
    done = wait_until(
        lambda: status(rest, "org/small"), lambda s: s["status"] == "DOWNLOADED", timeout_s=60
    )
    assert done["error_message"] is None
    commit = hub.repos["org/small"].commit
    assert status(rest, "org/small", commit)["status"] == "DOWNLOADED"
    assert (cache / "models--org--small" / "snapshots" / commit / "w.bin").read_bytes()
    again = ok(rest.post("/api/v1/models/download", body("org/small", commit)))
    assert again["status"] == "DOWNLOADED" and again["task_id"] is None
    listed = ok(rest.get("/api/v1/models/list"))["models"]
    assert {
        "model": {"hf_repo": "org/small", "hf_commit": commit},
        "status": "DOWNLOADED",
    } in listed
    assert ok(rest.get("/api/v1/models/space"))["cache_size_gb"] > 0

    assert delete(rest, "org/small", commit)["status"] == "DELETED"
    assert status(rest, "org/small", commit)["status"] == "NOT_FOUND"
    assert not (cache / "models--org--small").exists()
    assert delete(rest, "org/small")["status"] == "NOT_FOUND"


def test_progress_duplicate_limit_and_delete_during_download(node: MLNodeProcess) -> None:
    rest = GoClient(node.port)
    cache = Path(node.env["HF_HUB_CACHE"])
    for name in ("org/slow1", "org/slow2", "org/slow3"):
        assert ok(rest.post("/api/v1/models/download", body(name)), 202)["task_id"]
    duplicate = rest.post("/api/v1/models/download", body("org/slow1"))
    assert duplicate.status == 409 and duplicate.json()["error"]["code"] == "download_running"
    fourth = rest.post("/api/v1/models/download", body("org/small"))
    assert fourth.status == 429 and fourth.json()["error"]["code"] == "too_many_downloads"

    moving = wait_until(
        lambda: status(rest, "org/slow1"),
        lambda s: (s["progress"] or {}).get("downloaded_bytes", 0) >= BIG // 4,
        timeout_s=60,
    )
    assert moving["status"] == "DOWNLOADING"
    assert moving["progress"]["total_bytes"] > BIG and 0 < moving["progress"]["percent"] < 100
    listed = ok(rest.get("/api/v1/models/list"))["models"]
    assert sum(entry["status"] == "DOWNLOADING" for entry in listed) == 3

    for name in ("org/slow1", "org/slow2", "org/slow3"):
        assert delete(rest, name)["status"] == "DELETED"
        assert status(rest, name)["status"] == "NOT_FOUND"
        assert not (cache / f"models--{name.replace('/', '--')}").exists()
    assert ok(rest.post("/api/v1/models/download", body("org/small")), 202)["task_id"]


def test_a_failed_download_is_partial_never_downloaded(node: MLNodeProcess) -> None:
    rest = GoClient(node.port)
    ok(rest.post("/api/v1/models/download", body("org/broken")), 202)
    broken = wait_until(
        lambda: status(rest, "org/broken"), lambda s: s["status"] != "DOWNLOADING", timeout_s=60
    )
    assert broken["status"] == "PARTIAL" and "gone.bin" in broken["error_message"]
    assert broken["progress"]["downloaded_bytes"] < broken["progress"]["total_bytes"]
    listed = ok(rest.get("/api/v1/models/list"))["models"]
    assert [e["status"] for e in listed if e["model"]["hf_repo"] == "org/broken"] == ["PARTIAL"]


@pytest.mark.parametrize(
    "bad",
    [
        {"hf_repo": "../../etc", "hf_commit": None},
        {"hf_repo": "org/../../x", "hf_commit": None},
        {"hf_repo": "a/b/c", "hf_commit": None},
        {"hf_repo": "org--x/y", "hf_commit": None},
        {"hf_repo": "/abs", "hf_commit": None},
        {"hf_repo": "org/ok", "hf_commit": "../../../tmp"},
        {"hf_repo": "org/ok", "hf_commit": "a/b"},
        {"hf_repo": "", "hf_commit": None},
        {"hf_commit": None},
    ],
)
def test_bad_names_are_422_and_touch_nothing(node: MLNodeProcess, bad: dict[str, Any]) -> None:
    rest = GoClient(node.port)
    root = Path(node.env["HF_HUB_CACHE"]).parent
    before = sorted(root.rglob("*"))
    raw = json.dumps(bad).encode()
    for answer in (
        rest.post("/api/v1/models/status", raw),
        rest.post("/api/v1/models/download", raw),
        rest.send("DELETE", "/api/v1/models", raw, "application/json"),
    ):
        assert answer.status == 422, answer.body
        assert answer.json()["error"]["param"] in ("hf_repo", "hf_commit")
    assert sorted(root.rglob("*")) == before


def test_offline_node_ignores_downloads(hub: LocalHub, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    with MLNodeProcess(tmp_path / "node", env) as offline:
        rest = GoClient(offline.port)
        answer = ok(rest.post("/api/v1/models/download", body("org/small")))
        assert answer["status"] == "IGNORED" and answer["task_id"] is None
        assert status(rest, "org/small")["status"] == "NOT_FOUND"
    assert not (tmp_path / "hub").exists()
