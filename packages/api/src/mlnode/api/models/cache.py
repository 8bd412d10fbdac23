"""The Hugging Face hub cache on disk: what a revision holds, sizes, removal.

Layout (huggingface_hub's): `<cache>/models--<ns>--<name>/` with `blobs/` (files by hash, a
download in flight as `<hash>.incomplete`), `snapshots/<commit>/` (links to blobs), `refs/<branch>`
(a commit) and `trees/<commit>.json` (the file list `snapshot_download` fetched before any file).
A revision is DOWNLOADED only when every listed file is in its snapshot.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub._tree_cache import read_tree_cache
from huggingface_hub.file_download import REGEX_COMMIT_HASH, repo_folder_name

from mlnode.api.models.schemas import DownloadProgress, ModelRef, ModelState
from mlnode.common.errors import InvalidRequest

PREFIX = "models--"
INCOMPLETE = ".incomplete"
GIB = 1024**3


@dataclass(frozen=True)
class RevisionState:
    """A revision's state on disk and its bytes."""

    state: ModelState
    progress: DownloadProgress | None = None


class HubCache:
    """Reads and prunes one hub cache directory; never touches a path outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def repo_dir(self, repo: str) -> Path:
        """`models--ns--name` under the cache (the repo id is validated by `ModelRef`)."""
        path = (self.root / repo_folder_name(repo_id=repo, repo_type="model")).resolve()
        if path.parent != self.root:
            raise InvalidRequest(f"{repo!r} leaves the model cache", param="hf_repo")
        return path

    def commit(self, ref: ModelRef) -> str | None:
        """The commit `ref` names: its hash, or what `refs/<branch>` says (None if unknown)."""
        revision = ref.hf_commit or constants.DEFAULT_REVISION
        if REGEX_COMMIT_HASH.fullmatch(revision):
            return revision
        ref_file = self.repo_dir(ref.hf_repo) / "refs" / revision
        try:
            text = ref_file.read_text().strip()
        except OSError:
            return None
        return text if REGEX_COMMIT_HASH.fullmatch(text) else None

    def state(self, ref: ModelRef) -> RevisionState:
        """DOWNLOADED, PARTIAL or NOT_FOUND, with the bytes on disk when partial."""
        repo_dir = self.repo_dir(ref.hf_repo)
        commit = self.commit(ref)
        if commit is None or not (repo_dir / "snapshots" / commit).is_dir():
            in_flight = _incomplete_bytes(repo_dir)
            if in_flight:
                return RevisionState(
                    ModelState.PARTIAL, DownloadProgress(downloaded_bytes=in_flight)
                )
            return RevisionState(ModelState.NOT_FOUND)
        return self._snapshot_state(repo_dir, commit)

    def _snapshot_state(self, repo_dir: Path, commit: str) -> RevisionState:
        snapshot = repo_dir / "snapshots" / commit
        listing = read_tree_cache(str(repo_dir), commit)
        in_flight = _incomplete_bytes(repo_dir)
        if listing is None:
            # Cached by an older huggingface_hub, without a file list: judge by what is there.
            files = [p for p in snapshot.rglob("*") if p.is_file()]
            done = bool(files) and not in_flight
            state = ModelState.DOWNLOADED if done else ModelState.PARTIAL
            size = sum(p.stat().st_size for p in files) + in_flight
            return RevisionState(state, None if done else DownloadProgress(downloaded_bytes=size))
        total = sum(entry.size for entry in listing.values())
        present = sum(entry.size for name, entry in listing.items() if (snapshot / name).is_file())
        if present == total and all((snapshot / name).is_file() for name in listing):
            return RevisionState(ModelState.DOWNLOADED)
        written = present + in_flight
        percent = round(100.0 * written / total, 2) if total else None
        progress = DownloadProgress(downloaded_bytes=written, total_bytes=total, percent=percent)
        return RevisionState(ModelState.PARTIAL, progress)

    def revisions(self) -> list[tuple[ModelRef, ModelState]]:
        """Every cached model revision with its state."""
        found: list[tuple[ModelRef, ModelState]] = []
        if not self.root.is_dir():
            return found
        for repo_dir in sorted(self.root.glob(f"{PREFIX}*")):
            repo = repo_dir.name[len(PREFIX) :].replace(constants.REPO_ID_SEPARATOR, "/")
            snapshots = repo_dir / "snapshots"
            commits = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
            for commit in commits:
                ref = ModelRef(hf_repo=repo, hf_commit=commit)
                found.append((ref, self._snapshot_state(repo_dir, commit).state))
        return found

    def remove(self, ref: ModelRef) -> bool:
        """Remove a revision (every revision when `hf_commit` is null); False if none was there."""
        repo_dir = self.repo_dir(ref.hf_repo)
        if not repo_dir.exists():
            return False
        commit = self.commit(ref)
        snapshots = repo_dir / "snapshots"
        others = [p for p in snapshots.glob("*") if p.name != commit] if snapshots.is_dir() else []
        if ref.hf_commit is None or not others:
            shutil.rmtree(repo_dir)
            shutil.rmtree(self.root / ".locks" / repo_dir.name, ignore_errors=True)
            return True
        if commit is None or not (snapshots / commit).exists():
            return False
        _remove_revision(repo_dir, commit)
        return True

    def size_bytes(self) -> int:
        """Bytes of every file in the cache (links not followed: each blob counted once)."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        return total

    def free_bytes(self) -> int:
        """Free space on the disk that holds (or will hold) the cache."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free


def _incomplete_bytes(repo_dir: Path) -> int:
    blobs = repo_dir / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.glob(f"*{INCOMPLETE}"))


def _remove_revision(repo_dir: Path, commit: str) -> None:
    """Drop one snapshot and the blobs no other snapshot links to."""
    snapshots = repo_dir / "snapshots"
    kept = {
        os.path.realpath(p)
        for other in snapshots.iterdir()
        if other.name != commit
        for p in other.rglob("*")
        if p.is_symlink()
    }
    gone = {os.path.realpath(p) for p in (snapshots / commit).rglob("*") if p.is_symlink()}
    shutil.rmtree(snapshots / commit)
    for blob in gone - kept:
        if Path(blob).parent == repo_dir / "blobs":
            Path(blob).unlink(missing_ok=True)
    (repo_dir / "trees" / f"{commit}.json").unlink(missing_ok=True)
    refs = repo_dir / "refs"
    for ref_file in refs.rglob("*") if refs.is_dir() else []:
        if ref_file.is_file() and ref_file.read_text().strip() == commit:
            ref_file.unlink()
