"""`ModelManager`: a download past its deadline is killed and reads PARTIAL with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlnode.api.models.downloads import ModelManager
from mlnode.api.models.schemas import ModelRef, ModelState
from mlnode.api.models.settings import ModelsSettings
from mlnode.api.models.testing import HubRepo, LocalHub
from mlnode.common.testing import wait_until_async

BIG = 24 * 1024 * 1024


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub() as started:
        started.repos["org/slow"] = HubRepo(
            {"config.json": b"{}", "big.bin": bytes(BIG)}, held={"big.bin"}
        )
        monkeypatch.setenv("HF_ENDPOINT", started.url)
        yield started


def manager(tmp_path: Path, **overrides: Any) -> ModelManager:
    settings = ModelsSettings(_env_file=None, cache_dir=tmp_path, offline=False, **overrides)
    return ModelManager(settings)


async def test_a_download_past_its_deadline_is_killed_and_partial(
    hub: LocalHub, tmp_path: Path
) -> None:
    models = manager(tmp_path, download_timeout_s=3)
    ref = ModelRef(hf_repo="org/slow", hf_commit=None)
    code, started = await models.download(ref)
    assert code == 202 and started.status == "DOWNLOADING"
    ended = await wait_until_async(
        lambda: models.status(ref), lambda s: s.status is not ModelState.DOWNLOADING, timeout_s=30
    )
    assert ended.status is ModelState.PARTIAL
    assert ended.error_message == "killed after 3 s"
    await models.close()


async def test_delete_cancels_and_close_leaves_no_download(hub: LocalHub, tmp_path: Path) -> None:
    models = manager(tmp_path)
    ref = ModelRef(hf_repo="org/slow", hf_commit=None)
    await models.download(ref)
    process = models._running[("org/slow", "main")].process
    deleted = await models.delete(ref)
    assert deleted.status == "DELETED" and process.returncode is not None
    assert (await models.status(ref)).status is ModelState.NOT_FOUND
    assert (await models.list()).models == []
    await models.download(ref)
    await models.close()
    assert not models._running
