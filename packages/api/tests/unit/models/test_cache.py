"""`HubCache` over a cache filled by huggingface_hub itself from a local hub (in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download
from pydantic import ValidationError

from mlnode.api.models.cache import HubCache
from mlnode.api.models.schemas import ModelRef, ModelState
from mlnode.api.models.testing import HubRepo, LocalHub

SHARED = b"s" * 1000


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub() as started:
        started.repos["org/a"] = HubRepo({"config.json": b"{}", "shared.bin": SHARED})
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        yield started


def fetch(hub: LocalHub, cache: Path, repo: str, revision: str = "main") -> None:
    snapshot_download(repo, revision=revision, cache_dir=cache, endpoint=hub.url)


def test_downloaded_then_a_missing_file_reads_partial(hub: LocalHub, tmp_path: Path) -> None:
    cache = HubCache(tmp_path)
    ref = ModelRef(hf_repo="org/a", hf_commit=None)
    assert cache.state(ref).state is ModelState.NOT_FOUND
    fetch(hub, tmp_path, "org/a")
    commit = hub.repos["org/a"].commit
    assert cache.state(ref).state is ModelState.DOWNLOADED
    assert cache.state(ModelRef(hf_repo="org/a", hf_commit=commit)).state is ModelState.DOWNLOADED
    (tmp_path / "models--org--a" / "snapshots" / commit / "shared.bin").unlink()
    partial = cache.state(ref)
    assert partial.state is ModelState.PARTIAL and partial.progress is not None
    assert partial.progress.downloaded_bytes == 2 and partial.progress.total_bytes == 1002


def test_removing_one_revision_keeps_blobs_another_uses(hub: LocalHub, tmp_path: Path) -> None:
    fetch(hub, tmp_path, "org/a")
    first = hub.repos["org/a"].commit
    hub.repos["org/a"] = HubRepo({"config.json": b'{"v": 2}', "shared.bin": SHARED})
    fetch(hub, tmp_path, "org/a")
    second = hub.repos["org/a"].commit
    cache = HubCache(tmp_path)
    assert [ref.hf_commit for ref, _ in cache.revisions()] == sorted([first, second])
    assert cache.remove(ModelRef(hf_repo="org/a", hf_commit=first))
    assert cache.state(ModelRef(hf_repo="org/a", hf_commit=second)).state is ModelState.DOWNLOADED
    assert cache.state(ModelRef(hf_repo="org/a", hf_commit=first)).state is ModelState.NOT_FOUND
    assert cache.remove(ModelRef(hf_repo="org/a", hf_commit=None))
    assert not (tmp_path / "models--org--a").exists()
    assert not cache.remove(ModelRef(hf_repo="org/a", hf_commit=None))


@pytest.mark.parametrize(
    ("repo", "commit"),
    [("..", None), ("a/../b", None), ("a/b/c", None), ("a--b", None), ("ok", ".."), ("ok", "a/b")],
)
def test_names_outside_hugging_face_rules_are_refused(repo: str, commit: str | None) -> None:
    with pytest.raises(ValidationError):
        ModelRef(hf_repo=repo, hf_commit=commit)


def test_sizes_and_free_space(hub: LocalHub, tmp_path: Path) -> None:
    cache = HubCache(tmp_path / "not-yet")
    assert cache.size_bytes() == 0 and cache.free_bytes() > 0
    fetch(hub, tmp_path / "not-yet", "org/a")
    assert cache.size_bytes() >= len(SHARED)
