"""Background downloads into the hub cache: at most N at once, each a killable child process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

from huggingface_hub import constants

from mlnode.api.models.cache import HubCache
from mlnode.api.models.schemas import (
    DeleteResponse,
    DownloadProgress,
    DownloadResponse,
    ModelEntry,
    ModelListResponse,
    ModelRef,
    ModelState,
    ModelStatusResponse,
    SpaceResponse,
)
from mlnode.api.models.settings import ModelsSettings
from mlnode.common.errors import MLNodeError
from mlnode.common.hygiene import child_env

log = logging.getLogger(__name__)

#: Characters of a failed download's stderr kept as its error message.
ERROR_TAIL = 2000


class DownloadRunning(MLNodeError):
    """The same model is downloading already."""

    status_code = 409
    code = "download_running"


class TooManyDownloads(MLNodeError):
    """The node runs as many downloads as it allows."""

    status_code = 429
    code = "too_many_downloads"


@dataclass
class Download:
    """One download in flight."""

    ref: ModelRef
    task_id: str
    process: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)
    stderr: bytes = b""


def _key(ref: ModelRef) -> tuple[str, str]:
    return ref.hf_repo, ref.hf_commit or constants.DEFAULT_REVISION


class ModelManager:
    """The models API: status, download, delete, list, space over one `HubCache`."""

    def __init__(self, settings: ModelsSettings) -> None:
        self.settings = settings
        self.cache = HubCache(settings.cache_dir)
        self._running: dict[tuple[str, str], Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: dict[tuple[str, str], str] = {}
        self._starting = asyncio.Lock()

    async def status(self, ref: ModelRef) -> ModelStatusResponse:
        """N10: DOWNLOADING with progress while it runs, else what the cache holds."""
        state = await asyncio.to_thread(self.cache.state, ref)
        running = self._running.get(_key(ref))
        if running is not None:
            progress = state.progress or DownloadProgress(downloaded_bytes=0)
            progress.elapsed_s = round(time.monotonic() - running.started, 3)
            return ModelStatusResponse(model=ref, status=ModelState.DOWNLOADING, progress=progress)
        error = self._errors.get(_key(ref)) if state.state is not ModelState.DOWNLOADED else None
        return ModelStatusResponse(
            model=ref, status=state.state, progress=state.progress, error_message=error
        )

    async def download(self, ref: ModelRef) -> tuple[int, DownloadResponse]:
        """N11: start a download (202); 409 when it runs, 429 beyond the limit, IGNORED offline."""
        if self.settings.offline:
            return 200, DownloadResponse(status="IGNORED", model=ref)
        key = _key(ref)
        async with self._starting:  # the checks and the start as one step
            if key in self._running:
                raise DownloadRunning(f"{ref.hf_repo} at {key[1]} is downloading already")
            if len(self._running) >= self.settings.max_downloads:
                raise TooManyDownloads(
                    f"{len(self._running)} downloads run (MLNODE_MODELS_MAX_DOWNLOADS); retry later"
                )
            state = await asyncio.to_thread(self.cache.state, ref)
            if state.state is ModelState.DOWNLOADED:
                return 200, DownloadResponse(status=ModelState.DOWNLOADED, model=ref)
            download = await self._spawn(ref)
            self._running[key] = download
        self._errors.pop(key, None)
        task = asyncio.create_task(self._watch(download))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 202, DownloadResponse(
            task_id=download.task_id, status=ModelState.DOWNLOADING, model=ref
        )

    async def _spawn(self, ref: ModelRef) -> Download:
        env = {
            **child_env(os.environ),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlnode.api.models.fetch",
            ref.hf_repo,
            _key(ref)[1],
            str(self.cache.root),
            str(self.settings.download_workers),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        return Download(ref=ref, task_id=uuid.uuid4().hex, process=process)

    async def _watch(self, download: Download) -> None:
        failure: str | None = None
        try:
            await asyncio.wait_for(self._drain(download), self.settings.download_timeout_s)
            code = await download.process.wait()
            if code != 0:
                text = download.stderr.decode(errors="replace").strip()
                failure = text[-ERROR_TAIL:] or f"download exited with {code}"
        except TimeoutError:
            failure = f"killed after {self.settings.download_timeout_s:.0f} s"
            await _kill(download)
        key = _key(download.ref)
        if self._running.get(key) is download:  # not cancelled by a DELETE
            del self._running[key]
            if failure is not None:
                self._errors[key] = failure
                log.warning("download of %s failed: %s", download.ref.hf_repo, failure)

    @staticmethod
    async def _drain(download: Download) -> None:
        stream = download.process.stderr
        assert stream is not None
        while chunk := await stream.read(4096):
            download.stderr = (download.stderr + chunk)[-ERROR_TAIL * 2 :]

    async def delete(self, ref: ModelRef) -> DeleteResponse:
        """N12: cancel matching downloads, then remove the revision (all when commit is null)."""
        matching = [
            d
            for key, d in self._running.items()
            if key[0] == ref.hf_repo and (ref.hf_commit is None or key == _key(ref))
        ]
        for download in matching:
            self._running.pop(_key(download.ref), None)
            await _kill(download)
        self._errors = {k: v for k, v in self._errors.items() if k[0] != ref.hf_repo}
        removed = await asyncio.to_thread(self.cache.remove, ref)
        return DeleteResponse(status="DELETED" if removed or matching else "NOT_FOUND", model=ref)

    async def list(self) -> ModelListResponse:
        """N13: every cached revision, and downloads not yet on disk."""
        cached = await asyncio.to_thread(self.cache.revisions)
        entries = [ModelEntry(model=ref, status=state) for ref, state in cached]
        for key, download in self._running.items():
            match = next((e for e in entries if _key(e.model) == key), None)
            if match is not None:
                match.status = ModelState.DOWNLOADING
            else:
                entries.append(ModelEntry(model=download.ref, status=ModelState.DOWNLOADING))
        return ModelListResponse(models=entries)

    async def space(self) -> SpaceResponse:
        """N14: the cache's size, free disk, path."""
        size, free = await asyncio.gather(
            asyncio.to_thread(self.cache.size_bytes), asyncio.to_thread(self.cache.free_bytes)
        )
        gib = 1024**3
        return SpaceResponse(
            cache_size_gb=round(size / gib, 6),
            available_gb=round(free / gib, 3),
            cache_path=str(self.cache.root),
        )

    async def close(self) -> None:
        """Kill every download (server shutdown)."""
        for download in list(self._running.values()):
            await _kill(download)
        self._running.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _kill(download: Download) -> None:
    """SIGKILL the download's process group and reap it."""
    if download.process.returncode is None:
        try:
            os.killpg(download.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await download.process.wait()
